"""The reference's 23 TTT augmenters (ekinakyurek/marc, ttt/preprocess.py get_augmenters)
as array ops on padded grids (augment.py's conventions: int32 [..., 30, 30], FILL outside
the shape [..., 2]).

Each is a chain of augment.py ops, a D8 element or a training-only op (upscale, tile,
translate, reflect-and-concatenate); Reflect(axis, reverse=True), the mirror image first,
is a flip then a reflect. They act on inputs and outputs alike. A grid that grows past
30x30 comes back with fits=False (the reference then drops the task that holds it).

RandomTranslateXY is the only random one. The reference hands every example a copy of
its generator, np.random.RandomState(seed), not drawn from before the augmenters run, so
an example's shifts are the first draws of RandomState(seed): randint(0, min(4, rows)),
randint(0, min(4, cols)) for the input, then the same for the output (np.roll by them).
`translate_shifts` draws them the same way: they match bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import Pair

# (the reference's str() of the augmenter, its steps: augment.D8_NAMES / TRAIN_ONLY_NAMES),
# in get_augmenters' order.
AUGMENTERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('Rotate(90)', ('rot90',)),
    ('Rotate(270)', ('rot270',)),
    ('Rotate(180)', ('rot180',)),
    ('Flip(0)', ('flip_ud',)),
    ('Flip(1)', ('flip_lr',)),
    ('Reflect(0, reverse=True)', ('flip_ud', 'reflect_h')),
    ('Reflect(1, reverse=True)', ('flip_lr', 'reflect_w')),
    ('Reflect(0, reverse=False)', ('reflect_h',)),
    ('Reflect(1, reverse=False)', ('reflect_w',)),
    ('RandomTranslateXY()', ('translate',)),
    ('Transpose()', ('transpose',)),
    ('IncreaseResolution(2)', ('upscale_hw',)),
    ('IncreaseHeight(2)', ('upscale_h',)),
    ('IncreaseWidth(2)', ('upscale_w',)),
    ('Chain([Rotate(90), IncreaseResolution(2)])', ('rot90', 'upscale_hw')),
    ('Chain([Rotate(270), IncreaseResolution(2)])', ('rot270', 'upscale_hw')),
    ('Chain([Rotate(180), IncreaseResolution(2)])', ('rot180', 'upscale_hw')),
    ('Chain([Flip(0), IncreaseResolution(2)])', ('flip_ud', 'upscale_hw')),
    ('Chain([Flip(1), IncreaseResolution(2)])', ('flip_lr', 'upscale_hw')),
    ('Chain([Transpose(), IncreaseResolution(2)])', ('transpose', 'upscale_hw')),
    ('Repeat(0, 2)', ('tile_h',)),
    ('Repeat(1, 2)', ('tile_w',)),
    ('Repeat(2, 2)', ('tile_hw',)),
)


@jax.jit
def _d8(grids_G, shapes_G, k):
  return jax.vmap(augment.apply_d8, in_axes=(0, 0, None))(grids_G, shapes_G, k)


@jax.jit
def _train_only(grids_G, shapes_G, kind, shifts_G2):
  return jax.vmap(augment.apply_train_only, in_axes=(0, 0, None, 0))(
      grids_G, shapes_G, kind, shifts_G2
  )


def translate_shifts(shapes_G2: np.ndarray, seed: int) -> np.ndarray:
  """int32 [G, 2]: RandomTranslateXY's (rows, cols) shift of each grid, G = 2N grids in
  (input, output) order per example."""
  shifts = np.zeros_like(shapes_G2, np.int32)
  for example in range(len(shapes_G2) // 2):
    rng = np.random.RandomState(seed)  # a fresh copy per example; its output draws next
    for g in (2 * example, 2 * example + 1):
      rows, cols = (int(side) for side in shapes_G2[g])
      shifts[g] = rng.randint(0, min(4, rows)), rng.randint(0, min(4, cols))
  return shifts


def apply_augmenters(
    grids_G: np.ndarray, shapes_G: np.ndarray, shifts_G2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every augmenter on G padded grids -> (grids int32 [A, G, 30, 30], shapes [A, G, 2],
  fits bool [A, G]), A = len(AUGMENTERS)."""
  g = len(grids_G)
  pad = -g % 8  # batches of a multiple of 8 grids: a handful of compilations in all
  pad_rows = lambda x: np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
  grids_G, shapes_G, shifts_G2 = pad_rows(grids_G), pad_rows(shapes_G), pad_rows(shifts_G2)
  out_grids, out_shapes, out_fits = [], [], []
  for _, steps in AUGMENTERS:
    grids, shapes, fits = grids_G, shapes_G, np.ones(len(grids_G), bool)
    for step in steps:
      if step in augment.D8_NAMES:
        grids, shapes = _d8(grids, shapes, np.int32(augment.D8_NAMES.index(step)))
      else:
        kind = np.int32(augment.TRAIN_ONLY_NAMES.index(step))
        grids, shapes, step_fits = _train_only(grids, shapes, kind, shifts_G2)
        fits &= np.asarray(step_fits)
    out_grids.append(np.asarray(grids)[:g])
    out_shapes.append(np.asarray(shapes)[:g])
    out_fits.append(fits[:g])
  return np.stack(out_grids), np.stack(out_shapes), np.stack(out_fits)


def augment_pairs(pairs: Sequence[Pair], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """N demonstration pairs under every augmenter -> (grids int32 [A, N, 2, 30, 30],
  shapes [A, N, 2, 2], fits bool [A, N]: both grids of the pair within 30x30)."""
  padded = [augment.pad_grid(grid) for pair in pairs for grid in (pair.input, pair.output)]
  grids = np.stack([p for p, _ in padded])
  shapes = np.stack([s for _, s in padded])
  out_grids, out_shapes, fits = apply_augmenters(grids, shapes, translate_shifts(shapes, seed))
  a, n = len(AUGMENTERS), len(pairs)
  return (
      out_grids.reshape(a, n, 2, augment.SIZE, augment.SIZE),
      out_shapes.reshape(a, n, 2, 2),
      fits.reshape(a, n, 2).all(axis=-1),
  )
