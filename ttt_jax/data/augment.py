"""Grid augmentations as array ops: gathers and table lookups under jit/vmap.

A grid is `int32 [..., 30, 30]` with `shape [..., 2]` = (rows, cols); cells
outside the shape hold FILL = -1, always (every op keeps this canonical, so
two grids are equal iff their padded arrays are equal).

Invertible (used at training and inference, mapped back before voting):
  - D8: k in 0..7, `numpy_d8(g, k) = np.rot90(g.T if k >= 4 else g, k % 4)`;
  - colour permutations `perm[10]` (old colour c becomes perm[c]);
  - demonstration order (a permutation; its inverse is its argsort).
Training-only (`INVERTIBLE[name] is False`): upscale x2, tile x2, translate
by 0-3 cells (cyclic), reflect-and-concatenate. They may make a grid larger
than 30x30; they then return `fits=False` and the caller drops the example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ttt_jax.data.arc import MAX_SIDE, NUM_COLORS

SIZE = MAX_SIDE  # grids are padded to SIZE x SIZE (FILL outside the grid)
FILL = -1

D8_NAMES = (
    'identity',
    'rot90',
    'rot180',
    'rot270',
    'transpose',
    'flip_ud',
    'anti_transpose',
    'flip_lr',
)
TRAIN_ONLY_NAMES = (
    'upscale_h',
    'upscale_w',
    'upscale_hw',
    'tile_h',
    'tile_w',
    'tile_hw',
    'translate',
    'reflect_h',
    'reflect_w',
)
INVERTIBLE = {
    **{n: True for n in D8_NAMES},
    'colors': True,
    'example_order': True,
    **{n: False for n in TRAIN_ONLY_NAMES},
}


# ------------------------------------------------------------- numpy <-> pad


def pad_grid(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A numpy grid [h, w] -> (int32 [30, 30] FILL-padded, int32 [2])."""
  grid = np.asarray(grid)
  h, w = grid.shape
  if not (1 <= h <= SIZE and 1 <= w <= SIZE):
    raise ValueError(f'grid shape {grid.shape} outside 1..{SIZE}')
  padded = np.full((SIZE, SIZE), FILL, np.int32)
  padded[:h, :w] = grid
  return padded, np.array([h, w], np.int32)


def unpad_grid(grid: np.ndarray, shape: np.ndarray) -> np.ndarray:
  h, w = (int(s) for s in np.asarray(shape))
  return np.asarray(grid)[:h, :w].copy()


def numpy_color_permutation(rng: np.random.Generator) -> tuple[int, ...]:
  """A random permutation of the colours keeping 0 (the background), drawn with numpy."""
  return (0, *(int(c) for c in 1 + rng.permutation(NUM_COLORS - 1)))


def numpy_d8(grid: np.ndarray, k: int) -> np.ndarray:
  """The reference definition of D8 element k on an unpadded grid."""
  return np.rot90(grid.T if k >= 4 else grid, k % 4)


# ------------------------------------------------------------ gather helper


def _gather(grid: jax.Array, src_r: jax.Array, src_c: jax.Array, new_shape: jax.Array) -> jax.Array:
  """out[r, c] = grid[src_r[r, c], src_c[r, c]] inside new_shape, FILL outside."""
  rows, cols = jnp.arange(SIZE)[:, None], jnp.arange(SIZE)[None, :]
  inside = (rows < new_shape[0]) & (cols < new_shape[1])
  values = grid[jnp.clip(src_r, 0, SIZE - 1), jnp.clip(src_c, 0, SIZE - 1)]
  return jnp.where(inside, values, FILL)


# ---------------------------------------------------------------------- D8


def _d8_table() -> tuple[np.ndarray, np.ndarray]:
  """(compose [8, 8], inverse [8]) found by acting on a grid of distinct cells."""
  probe = np.arange(6).reshape(2, 3)
  images = [numpy_d8(probe, k) for k in range(8)]

  def which(g: np.ndarray) -> int:
    return next(k for k, im in enumerate(images) if im.shape == g.shape and (im == g).all())

  compose = np.array(
      [[which(numpy_d8(images[a], b)) for b in range(8)] for a in range(8)], np.int32
  )
  inverse = np.array([int(np.argmax(compose[a] == 0)) for a in range(8)], np.int32)
  return compose, inverse


D8_COMPOSE, D8_INVERSE = _d8_table()


def compose_d8(a, b):
  """The D8 element doing `a` then `b` (works on ints and int arrays)."""
  return jnp.asarray(D8_COMPOSE)[a, b]


def invert_d8(k):
  return jnp.asarray(D8_INVERSE)[k]


def _d8_sources(h: jax.Array, w: jax.Array, k: jax.Array):
  """Source (row, col) of every output cell, and the output shape, for D8 k."""
  i, j = jnp.arange(SIZE)[:, None], jnp.arange(SIZE)[None, :]
  i, j = jnp.broadcast_to(i, (SIZE, SIZE)), jnp.broadcast_to(j, (SIZE, SIZE))
  # Coordinates in g' = g.T if k >= 4 else g, of shape (hp, wp); then rot90^m.
  transposed = k >= 4
  hp, wp = jnp.where(transposed, w, h), jnp.where(transposed, h, w)
  m = k % 4
  a = jnp.select([m == 0, m == 1, m == 2], [i, j, hp - 1 - i], hp - 1 - j)
  b = jnp.select([m == 0, m == 1, m == 2], [j, wp - 1 - i, wp - 1 - j], i)
  src_r, src_c = jnp.where(transposed, b, a), jnp.where(transposed, a, b)
  odd = m % 2 == 1
  new_shape = jnp.stack([jnp.where(odd, wp, hp), jnp.where(odd, hp, wp)])
  return src_r, src_c, new_shape


def apply_d8(grid: jax.Array, shape: jax.Array, k) -> tuple[jax.Array, jax.Array]:
  """D8 element k on one padded grid [30, 30]; vmap for batches."""
  src_r, src_c, new_shape = _d8_sources(shape[0], shape[1], jnp.asarray(k))
  return _gather(grid, src_r, src_c, new_shape), new_shape.astype(jnp.int32)


# ------------------------------------------------------------------ colours


def apply_colors(grid: jax.Array, perm: jax.Array) -> jax.Array:
  """Colour c -> perm[c]; FILL stays FILL. Any leading axes on grid."""
  return jnp.where(grid >= 0, jnp.asarray(perm)[jnp.maximum(grid, 0)], FILL)


def invert_permutation(perm: jax.Array) -> jax.Array:
  return jnp.argsort(perm, axis=-1).astype(jnp.int32)


def random_color_permutation(rng: jax.Array, keep_zero: bool = True) -> jax.Array:
  """A uniform permutation of the 10 colours; with keep_zero, 0 (background) stays."""
  if keep_zero:
    rest = jax.random.permutation(rng, jnp.arange(1, NUM_COLORS))
    return jnp.concatenate([jnp.zeros(1, jnp.int32), rest.astype(jnp.int32)])
  return jax.random.permutation(rng, NUM_COLORS).astype(jnp.int32)


# --------------------------------------------------------- example ordering


def random_example_order(rng: jax.Array, n: int) -> jax.Array:
  return jax.random.permutation(rng, n).astype(jnp.int32)


def permute_examples(items: jax.Array, order: jax.Array) -> jax.Array:
  """Reorders the leading (example) axis: result[i] = items[order[i]]."""
  return jnp.take(items, order, axis=0)


def invert_example_order(order: jax.Array) -> jax.Array:
  return jnp.argsort(order).astype(jnp.int32)


# ---------------------------------------------------------------- Transform


@struct.dataclass
class Transform:
  """An invertible augmentation: D8 element, then colour permutation."""

  d8: jax.Array  # int32 [...]
  colors: jax.Array  # int32 [..., 10]


def identity_transform() -> Transform:
  return Transform(jnp.int32(0), jnp.arange(NUM_COLORS, dtype=jnp.int32))


def apply_transform(grid: jax.Array, shape: jax.Array, t: Transform) -> tuple[jax.Array, jax.Array]:
  grid, shape = apply_d8(grid, shape, t.d8)
  return apply_colors(grid, t.colors), shape


def invert_transform(t: Transform) -> Transform:
  # D8 and colours act on different things (positions, values), so they
  # commute: the inverse of (d8, colors) is (d8^-1, colors^-1).
  return Transform(invert_d8(t.d8), invert_permutation(t.colors))


def compose_transforms(a: Transform, b: Transform) -> Transform:
  """`a` then `b`."""
  colors = jnp.take_along_axis(b.colors, a.colors, axis=-1)
  return Transform(compose_d8(a.d8, b.d8), colors)


def random_transforms(
    rng: jax.Array, n: int, *, d8: bool = True, colors: bool = True, keep_zero: bool = True
) -> Transform:
  """n independent transforms: D8 uniform over 8 and/or a colour permutation."""
  k_rng, c_rng = jax.random.split(rng)
  ks = jax.random.randint(k_rng, (n,), 0, 8, jnp.int32) if d8 else jnp.zeros(n, jnp.int32)
  if colors:
    perms = jax.vmap(lambda r: random_color_permutation(r, keep_zero))(jax.random.split(c_rng, n))
  else:
    perms = jnp.tile(jnp.arange(NUM_COLORS, dtype=jnp.int32), (n, 1))
  return Transform(ks, perms)


# ------------------------------------------------------ training-only ops


def apply_train_only(
    grid: jax.Array, shape: jax.Array, kind, shift=(0, 0)
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-only op `TRAIN_ONLY_NAMES[kind]` -> (grid, shape, fits).

  `shift` = (dy, dx) is used by 'translate' (a cyclic shift, shape kept).
  When the result would exceed 30x30, `fits` is False and the grid holds
  only its top-left 30x30 corner: drop it.
  """
  h, w = shape[0], shape[1]
  r, c = jnp.arange(SIZE)[:, None], jnp.arange(SIZE)[None, :]
  r, c = jnp.broadcast_to(r, (SIZE, SIZE)), jnp.broadcast_to(c, (SIZE, SIZE))
  dy, dx = shift
  # One (src_r, src_c, new_h, new_w) per op, in TRAIN_ONLY_NAMES order.
  candidates = [
      (r // 2, c, 2 * h, w),  # upscale_h
      (r, c // 2, h, 2 * w),  # upscale_w
      (r // 2, c // 2, 2 * h, 2 * w),  # upscale_hw
      (r % h, c, 2 * h, w),  # tile_h
      (r, c % w, h, 2 * w),  # tile_w
      (r % h, c % w, 2 * h, 2 * w),  # tile_hw
      ((r - dy) % h, (c - dx) % w, h, w),  # translate
      (jnp.where(r < h, r, 2 * h - 1 - r), c, 2 * h, w),  # reflect_h
      (r, jnp.where(c < w, c, 2 * w - 1 - c), h, 2 * w),  # reflect_w
  ]
  kind = jnp.asarray(kind)
  pick = lambda xs: jnp.stack([jnp.asarray(x) for x in xs])[kind]
  src_r, src_c = pick([x[0] for x in candidates]), pick([x[1] for x in candidates])
  new_shape = jnp.stack(
      [pick([x[2] for x in candidates]), pick([x[3] for x in candidates])]
  ).astype(jnp.int32)
  fits = jnp.all(new_shape <= SIZE)
  return _gather(grid, src_r, src_c, new_shape), new_shape, fits
