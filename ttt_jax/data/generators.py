"""ARC-like task generators, written for this project, and a pre-registered held-out split.

Each family is a concept of ARC-AGI-1 TRAINING tasks (ids in `Family.concept`; no
evaluation task was used to choose them), with a few discrete variants. A task
fixes the family's random parameters (a colour map, a factor, an operation) and
draws 3 or 4 demonstrations and a test pair from them; grids are small (sides
1..10) so that a task stays within `MAX_TOKENS` of the compact format and stage 1
sees many tasks per CPU-minute.

The split, fixed in this file before any evaluation result: `gen:train` draws
only the TRAIN variants of the trained families; `gen:heldout` holds the
HELD_OUT variants of those families (unseen parameters) and every variant of
the held-out family (`HELD_OUT_FAMILY`, never trained on). `gen:val` (added
2026-12-06, for choosing recipes by sweeps) has the same variants as
gen:heldout with seeds of its own, so a recipe is picked without touching the
held-out tasks. All are deterministic: task i of a split is a pure function of
(split, i), and the splits' seeds are disjoint.

  arc.load_tasks('gen:heldout@slice=0:100')   # what docs/RESULTS.md evaluates
  arc.load_tasks('gen:train@slice=0:20000')   # what stage 1 trains on
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ttt_jax.data.task_types import MAX_SIDE, NUM_COLORS, Pair, Task
from ttt_jax.data.format import task_length

MAX_TOKENS = 512  # compact tokens of a whole task (demonstrations + test pair)
SPLITS = ('train', 'heldout', 'val')
ID_PREFIX = 'gen-'  # every generated task id: gen-<family>-<variant>-<seed>
SPLIT_SIZE = 100_000  # task ids of a split run 0..SPLIT_SIZE-1
_MAX_DRAWS = 50

Rule = Callable[[np.random.Generator], Pair]  # one (input, output) pair of a task's rule


def _sparse_grid(rng: np.random.Generator, h: int, w: int, colors, density: float) -> np.ndarray:
  grid = np.zeros((h, w), np.int8)
  cells = rng.random((h, w)) < density
  grid[cells] = rng.choice(colors, int(cells.sum()))
  return grid


def _shape(rng: np.random.Generator, low: int, high: int) -> tuple[int, int]:
  return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
  """n distinct non-background colours."""
  return rng.choice(np.arange(1, NUM_COLORS), n, replace=False)


# ---------------------------------------------------------------- families


def _d8(rng, variant) -> Rule:
  k = int(variant)
  colors = _palette(rng, int(rng.integers(2, 5)))

  def pair(rng):
    x = _sparse_grid(rng, *_shape(rng, 2, 7), colors, rng.uniform(0.3, 0.8))
    return Pair(x, np.rot90(x.T if k >= 4 else x, k % 4).copy())

  return pair


def _color_map(rng, variant) -> Rule:
  m = int(variant)  # how many colours the map changes
  src = _palette(rng, m)
  table = np.arange(NUM_COLORS)
  table[src] = rng.permutation(np.setdiff1d(np.arange(1, NUM_COLORS), src))[:m]
  colors = np.concatenate([src, _palette(rng, 2)])

  def pair(rng):
    x = _sparse_grid(rng, *_shape(rng, 2, 7), colors, rng.uniform(0.4, 0.9))
    return Pair(x, table[x].astype(np.int8))

  return pair


def _upscale(rng, variant) -> Rule:
  fh, fw = (int(c) for c in variant.split('x'))
  colors = _palette(rng, int(rng.integers(2, 5)))

  def pair(rng):
    x = _sparse_grid(rng, *_shape(rng, 1, 4), colors, rng.uniform(0.4, 0.9))
    return Pair(x, np.kron(x, np.ones((fh, fw), np.int8)))

  return pair


_TILE_SCHEMES = {  # per tile: a D8 element (numpy_d8 numbering), row-major over the layout
    '1x2-copy': ((0, 0),),
    '1x2-mirror': ((0, 7),),  # original, then flipped left-right
    '2x1-mirror': ((0,), (5,)),  # original, then flipped up-down
    '2x2-mirror': ((0, 7), (5, 2)),
    '2x2-rotate': ((0, 1), (3, 2)),
}


def _d8_grid(x: np.ndarray, k: int) -> np.ndarray:
  return np.rot90(x.T if k >= 4 else x, k % 4)


def _tile(rng, variant) -> Rule:
  layout = _TILE_SCHEMES[variant]
  colors = _palette(rng, int(rng.integers(2, 5)))
  square = variant.endswith('rotate')

  def pair(rng):
    h, w = _shape(rng, 2, 4)
    x = _sparse_grid(rng, h, h if square else w, colors, rng.uniform(0.4, 0.9))
    rows = [np.concatenate([_d8_grid(x, k) for k in row], axis=1) for row in layout]
    return Pair(x, np.concatenate(rows, axis=0))

  return pair


_OPS = {
    'and': np.logical_and,
    'or': np.logical_or,
    'xor': np.logical_xor,
    'nor': lambda a, b: ~(a | b),
}


def _boolean(rng, variant) -> Rule:
  op, orientation = variant.split('-')
  a_color, b_color, sep_color, out_color = _palette(rng, 4)

  def pair(rng):
    h, w = _shape(rng, 2, 5)
    a, b = rng.random((h, w)) < 0.5, rng.random((h, w)) < 0.5
    parts = [np.where(a, a_color, 0), np.where(b, b_color, 0)]
    axis = 1 if orientation == 'lr' else 0
    sep = np.full((h, 1) if axis == 1 else (1, w), sep_color)
    x = np.concatenate([parts[0], sep, parts[1]], axis=axis).astype(np.int8)
    return Pair(x, np.where(_OPS[op](a, b), out_color, 0).astype(np.int8))

  return pair


def _gravity(rng, variant) -> Rule:
  k = {'down': 0, 'up': 2, 'left': 3, 'right': 1}[variant]  # rotate so it falls down
  colors = _palette(rng, int(rng.integers(1, 4)))

  def fall_down(g: np.ndarray) -> np.ndarray:
    out = np.zeros_like(g)
    for c in range(g.shape[1]):
      cells = g[:, c][g[:, c] != 0]
      if cells.size:
        out[-cells.size :, c] = cells
    return out

  def pair(rng):
    x = _sparse_grid(rng, *_shape(rng, 3, 7), colors, rng.uniform(0.2, 0.5))
    y = np.rot90(fall_down(np.rot90(x, k)), -k)
    return Pair(x, y.copy())

  return pair


def _recolor_by_size(rng, variant) -> Rule:
  sizes = tuple(range(1, int(variant) + 1))  # objects of these sizes (cells), each its colour
  src, *targets = _palette(rng, len(sizes) + 1)

  def pair(rng):
    h, w = _shape(rng, 5, 8)
    x = np.zeros((h, w), np.int8)
    y = np.zeros((h, w), np.int8)
    for _ in range(int(rng.integers(2, 5))):
      size = int(rng.choice(sizes))
      r, c = int(rng.integers(0, h)), int(rng.integers(0, w - size + 1))
      region = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + size + 1))
      if x[region].any():  # keep objects apart (no touching, diagonals included)
        continue
      x[r, c : c + size] = src
      y[r, c : c + size] = targets[size - 1]
    return Pair(x, y)

  return pair


def _crop_odd(rng, variant) -> Rule:
  distractors = int(variant)
  common, odd = _palette(rng, 2)

  def sprite(rng, color):
    h, w = _shape(rng, 1, 3)
    s = np.where(rng.random((h, w)) < 0.7, color, 0).astype(np.int8)
    s[0, 0] = s[-1, -1] = color  # the bounding box is the sprite's
    return s

  def pair(rng):
    h, w = _shape(rng, 6, 9)
    x = np.zeros((h, w), np.int8)
    sprites = [sprite(rng, odd)] + [sprite(rng, common) for _ in range(distractors)]
    for s in sprites:
      for _ in range(20):
        r, c = int(rng.integers(0, h - s.shape[0] + 1)), int(rng.integers(0, w - s.shape[1] + 1))
        region = (
            slice(max(r - 1, 0), r + s.shape[0] + 1),
            slice(max(c - 1, 0), c + s.shape[1] + 1),
        )
        if not x[region].any():
          x[r : r + s.shape[0], c : c + s.shape[1]] = s
          break
      else:
        raise _Redraw
    return Pair(x, sprites[0])

  return pair


class _Redraw(Exception):
  """A draw that did not fit (a full grid, a too-long task): draw again."""


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  make: Callable[[np.random.Generator, str], Rule]
  train: tuple[str, ...]  # variants stage 1 sees
  held_out: tuple[str, ...]  # unseen parameters, only in gen:heldout
  concept: tuple[str, ...]  # ARC-AGI-1 training tasks with this concept


FAMILIES = (
    Family('d8', _d8, ('1', '2', '3', '4', '5', '7'), ('6',),
           ('3c9b0459', '6150a2bd', '67a3c6ac', '68b16354', '74dd1130', 'ed36ccf7')),
    Family('color_map', _color_map, ('1', '2', '3'), ('4',), ('0d3d703e', 'c8f0f002', 'b1948b0a')),
    Family('upscale', _upscale, ('2x2', '3x3', '1x2', '2x1'), ('2x3',),
           ('c59eb873', '9172f3a0', 'b91ae062', 'ac0a08a4')),
    Family('tile', _tile, ('1x2-copy', '1x2-mirror', '2x1-mirror', '2x2-rotate'), ('2x2-mirror',),
           ('a416b8f3', '6d0aefbc', '8be77c9e', '46442a0e', '7fe24cdd', '3af2c5a8')),
    Family('boolean', _boolean, ('and-lr', 'or-lr', 'nor-lr', 'and-tb', 'xor-tb', 'nor-tb'),
           ('xor-lr', 'or-tb'),
           ('0520fde7', '99b1bc43', 'ce4f8723', 'f2829549', 'fafffa47', '3428a4f5')),
    Family('recolor_by_size', _recolor_by_size, ('2', '3'), ('4',), ('6e82a1ae', '08ed6ac7')),
    Family('crop_odd', _crop_odd, ('1', '2'), ('3',), ('1f85a75f', 'be94b721', '0b148d64')),
    Family('gravity', _gravity, (), ('down', 'up', 'left', 'right'), ('1e0a9b12', '3906de3d')),
)  # fmt: skip
HELD_OUT_FAMILY = 'gravity'
BY_NAME = {f.name: f for f in FAMILIES}


def _variants(split: str) -> list[tuple[str, str]]:
  if split not in SPLITS:
    raise ValueError(f'unknown generated split {split!r}; expected one of {SPLITS}')
  return [(f.name, v) for f in FAMILIES for v in (f.train if split == 'train' else f.held_out)]


# Seeds of task 0 of each split: their ranges of SPLIT_SIZE never overlap.
_FIRST_SEED = {'train': 0, 'heldout': SPLIT_SIZE, 'val': 2 * SPLIT_SIZE}


def generate(family: str, variant: str, seed: int, num_demos: int | None = None) -> Task:
  """One task of (family, variant), a pure function of the seed; its id says all three."""
  fam = BY_NAME[family]
  if variant not in fam.train + fam.held_out:
    raise ValueError(f'family {family!r} has no variant {variant!r}')
  rng = np.random.default_rng([zlib.crc32(f'{family}/{variant}'.encode()), seed])
  for _ in range(_MAX_DRAWS):
    try:
      rule = fam.make(rng, variant)
      n = num_demos or int(rng.integers(3, 5))
      pairs = tuple(rule(rng) for _ in range(n + 1))
    except _Redraw:
      continue
    grids = [g for p in pairs for g in p]
    too_big = any(not (1 <= s <= MAX_SIDE) for g in grids for s in g.shape)
    # A task whose demonstrations show nothing to learn (every output equals its input,
    # or every pair the same) is redrawn.
    trivial = all(p.input.shape == p.output.shape and (p.input == p.output).all() for p in pairs)
    task = Task(generated_id(family, variant, seed), pairs[:n], pairs[n:], source='generated')
    if not too_big and not trivial and task_length(task) <= MAX_TOKENS:
      return task
  raise RuntimeError(f'{family}/{variant} seed {seed}: no valid task in {_MAX_DRAWS} draws')


def generated_id(family: str, variant: str, seed: int) -> str:
  return f'{ID_PREFIX}{family}-{variant}-{seed}'


def is_generated(task_id: str) -> bool:
  return task_id.startswith(ID_PREFIX)


def _locate(variants: Sequence[tuple[str, str]], split: str, index: int) -> tuple[str, str, int]:
  """(family, variant, seed) of task `index` of a split: variants in turn, each task with
  its own seed (the splits' seeds are disjoint)."""
  family, variant = variants[index % len(variants)]
  return family, variant, _FIRST_SEED[split] + index


def task_of(split: str, index: int) -> Task:
  """Task `index` of a split."""
  return generate(*_locate(_variants(split), split, index))


def source(split: str) -> Iterator[tuple[str, Callable[[], Task]]]:
  """(task id, thunk) of every task of a split, for arc.load_tasks' `gen:SPLIT` selector
  (use @slice=, @sample= to take some)."""
  variants = _variants(split)
  for index in range(SPLIT_SIZE):
    yield generated_id(*_locate(variants, split, index)), (lambda i=index: task_of(split, i))


def family_of(task_id: str) -> tuple[str, str]:
  """(family, variant) of a generated task id."""
  rest = task_id[len(ID_PREFIX) :] if is_generated(task_id) else ''
  for fam in FAMILIES:
    if rest.startswith(fam.name + '-'):
      return fam.name, rest[len(fam.name) + 1 :].rsplit('-', 1)[0]
  raise ValueError(f'{task_id!r} is not a generated task id')
