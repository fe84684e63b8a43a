"""The test-time-training dataset of one task, and its packing into arrays.

Per task (the paper's recipe, ekinakyurek/marc in spirit):
  1. Leave-one-out: for each demonstration i, the other demonstrations form
     the prompt and demo i the target (a one-demo task gives a prompt with no
     demonstrations: the only signal there is).
  2. Each under `augmentations_per_task` draws of a random invertible
     transform (D8 + colour permutation keeping 0; the first draw is the
     identity), with the prompt demonstrations in a random order; optionally
     a training-only op (upscale, tile, translate, reflect) with probability
     `train_only_prob`, draws whose grids then exceed 30x30 dropped.
  3. Deduplicated by token content; sequences over `seq_len` tokens dropped.
  4. Leave-two-out fills in: if fewer than `max_examples` remain and the task
     has at least 3 demonstrations, tasks with demo i as target and the
     prompt missing both i and one other demo j (every ordered i != j) are
     added under the same draws, deduplicated and filtered alike.
  5. A seeded shuffle, then at most `max_examples` kept.
The result is deterministic for a seed. `recipe='marc'` builds the reference's own data
instead (marc_ttt_data.py).

With `mode='direct_io'` (the paper's "E2E data" arm) step 1 makes one example per
demonstration with no demonstrations before it: `BOS INPUT x OUTPUT y EOS`, the output
the only target under every loss mode but 'inputs_too'; steps 2, 3 and 5 are the same,
step 4 is skipped (nothing to leave out). Inference is unchanged.

`pack_tasks` lays them out as arrays: one example per row, padded to
`seq_len`, or, with `pack`, whole examples packed into rows (first-fit
decreasing) with segment ids, so that the step's compute follows real tokens
rather than padding. A packed row is one draw of a batch: an epoch is then a
pass over rows, each step trains on more examples, and there are fewer steps.
`row_length` and `cut_rows` shorten a task's rows to a length bucket of its
longest row instead: the same batches and steps, less padding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import augment, marc_ttt_data
from ttt_jax.data.arc import Pair, Task
from ttt_jax.data.format import bucket_length, loss_mode
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT

Example = tuple[np.ndarray, np.ndarray]  # (tokens int32 [S], loss_mask int32 [S])
_Base = tuple[tuple[int, ...], int]  # (prompt demo indices, target index)
RECIPES = ('ttt_jax', 'marc')
# What one example is: a leave-one-out task (the paper's), or one demonstration pair
# alone ('direct_io': the paper's "E2E data" arm).
DATA_MODES = ('leave_one_out', 'direct_io')


@dataclasses.dataclass(frozen=True)
class TTTDataConfig:
  max_examples: int = 250
  seq_len: int = 8192  # tokens; longer examples are dropped, shorter padded to it
  augmentations_per_task: int = 64
  loss: str = 'all_but_first'
  mode: str = 'leave_one_out'  # one of DATA_MODES
  d8: bool = True
  colors: bool = True
  keep_zero: bool = True  # colour 0 is the background: never permuted.
  shuffle_order: bool = True
  leave_two_out: bool = True
  train_only_prob: float = 0.0
  pack: bool = False  # several examples per row of seq_len (see the module docstring)
  # Rows of a task are cut to the smallest of length_bucket x (1, 2, 3, 4, 6, 8, ...)
  # holding its longest row (at most seq_len): tasks of one row length train together,
  # so the step's compute follows the real lengths (one compilation per length).
  # 0: every row is seq_len long.
  length_bucket: int = 128
  # 'ttt_jax': the builder of this file. 'marc': the reference's TTT data exactly
  # (ekinakyurek/marc, marc_ttt_data.py), which reads only max_examples, seq_len, loss,
  # no_transform (and pack, length_bucket, which lay out rows).
  recipe: str = 'ttt_jax'
  # recipe='marc': the reference's --no_transform (no augmenters, no colour permutation: the
  # leave-one-out tasks and a copy of each in another demonstration order).
  no_transform: bool = False

  def __post_init__(self):
    loss_mode(self.loss)  # raises on an unknown mode
    if self.mode not in DATA_MODES:
      raise ValueError(f'mode={self.mode!r}; expected one of {DATA_MODES}')
    if self.augmentations_per_task < 1 or self.max_examples < 1:
      raise ValueError('augmentations_per_task and max_examples must be >= 1')
    if not 0.0 <= self.train_only_prob <= 1.0:
      raise ValueError(f'train_only_prob={self.train_only_prob} not in [0, 1]')
    if self.length_bucket < 0:
      raise ValueError(f'length_bucket={self.length_bucket} must be >= 0 (0: rows of seq_len)')
    if self.recipe not in RECIPES:
      raise ValueError(f'recipe={self.recipe!r}; expected one of {RECIPES}')
    if self.no_transform and self.recipe != 'marc':
      raise ValueError(
          "no_transform=True is a switch of the 'marc' recipe (for 'ttt_jax': d8, colors False)"
      )
    if self.mode != 'leave_one_out' and self.recipe == 'marc':
      raise ValueError(
          f"mode={self.mode!r} is a mode of the 'ttt_jax' recipe: the reference's code has no "
          'E2E data (docs/TTT.md "Arms")'
      )


@dataclasses.dataclass(frozen=True)
class TTTDataStats:
  task_id: str
  num_demos: int
  num_candidates: int  # examples formed, before any filter
  num_duplicates: int
  num_too_long: int  # over seq_len
  num_too_large: int  # a grid over 30x30 after a training-only op
  used_leave_two_out: bool
  num_examples: int  # kept, after the cap


class TTTArrays(NamedTuple):
  """Packed TTT data for T tasks (docs/ARCHITECTURE.md); a pytree."""

  tokens: np.ndarray  # int32 [T, N, S], PAD-filled
  loss_mask: np.ndarray  # int32 [T, N, S]
  lengths: np.ndarray  # int32 [T, N], 0 for empty rows
  num_examples: np.ndarray  # int32 [T]: rows in use
  # Packed rows only (None: one example per row): int32 [T, N, S], 1, 2, ... the example
  # of each token, 0 padding. Rows without them run attention kernels that take lengths
  # (cuDNN's flash attention on a GPU).
  segments: np.ndarray | None = None


# ------------------------------------------------------- leave-n-out tasks


def _leave_one_out_bases(n: int) -> list[_Base]:
  return [(tuple(j for j in range(n) if j != i), i) for i in range(n)]


def _direct_bases(n: int) -> list[_Base]:
  return [((), i) for i in range(n)]


def _leave_two_out_bases(n: int) -> list[_Base]:
  return [
      (tuple(k for k in range(n) if k not in (i, j)), i)
      for i in range(n)
      for j in range(n)
      if j != i
  ]


def _base_tasks(task: Task, bases: list[_Base]) -> list[Task]:
  def name(prompt: tuple[int, ...], target: int) -> str:
    left_out = sorted(set(range(len(task.train))) - set(prompt))
    return f'{task.id}:without{left_out}:target{target}'

  return [
      Task(
          name(prompt, target),
          tuple(task.train[j] for j in prompt),
          (task.train[target],),
          task.source,
      )
      for prompt, target in bases
  ]


def leave_one_out(task: Task) -> list[Task]:
  """One task per demonstration i: the others as prompt, demo i as the test."""
  return _base_tasks(task, _leave_one_out_bases(len(task.train)))


def leave_two_out(task: Task) -> list[Task]:
  """One task per ordered (i, j), i != j: prompt without i and j, test = demo i."""
  return _base_tasks(task, _leave_two_out_bases(len(task.train)))


# ----------------------------------------------------- augmented grid sets

GRID_BATCH = 8  # demonstration grids per augmentation call, padded up to a multiple


@functools.partial(jax.jit, static_argnames=('num', 'd8', 'colors', 'keep_zero'))
def _augment_grids(grids, shapes, rng, *, num, d8, colors, keep_zero):
  """[G, 30, 30] grids under `num` random transforms (the first: identity)."""
  transforms = augment.random_transforms(rng, num, d8=d8, colors=colors, keep_zero=keep_zero)
  identity = augment.identity_transform()
  transforms = augment.Transform(
      transforms.d8.at[0].set(identity.d8), transforms.colors.at[0].set(identity.colors)
  )
  per_grid = jax.vmap(augment.apply_transform, in_axes=(0, 0, None))
  return jax.vmap(per_grid, in_axes=(None, None, 0))(grids, shapes, transforms)


@jax.jit
def _train_only_grids(grids_KG, shapes_KG, kinds_K, shifts_K2):
  per_grid = jax.vmap(augment.apply_train_only, in_axes=(0, 0, None, None))
  return jax.vmap(per_grid)(grids_KG, shapes_KG, kinds_K, shifts_K2)


def _augmented_demos(
    task: Task, cfg: TTTDataConfig, seed: int, rng: np.random.Generator
) -> tuple[list[list[Pair]], int]:
  """`augmentations_per_task` transformed copies of the demonstrations.

  Returns the copies whose grids all fit, and how many copies were dropped.
  """
  n = len(task.train)
  padded = [augment.pad_grid(g) for p in task.train for g in (p.input, p.output)]
  num_grids = len(padded)
  # 1x1 filler grids up to a multiple of 8 (one compilation serves tasks of 1-4 demos);
  # only the first num_grids = 2n are read back.
  padded += [augment.pad_grid(np.zeros((1, 1), np.int8))] * (-num_grids % GRID_BATCH)
  grids = np.stack([g for g, _ in padded])
  shapes = np.stack([s for _, s in padded])
  k = cfg.augmentations_per_task
  grids_KG, shapes_KG = _augment_grids(
      grids,
      shapes,
      jax.random.key(seed),
      num=k,
      d8=cfg.d8,
      colors=cfg.colors,
      keep_zero=cfg.keep_zero,
  )
  fits_K = np.ones(k, bool)
  if cfg.train_only_prob > 0:
    use_K = rng.random(k) < cfg.train_only_prob
    use_K[0] = False  # The original stays as it is.
    kinds_K = rng.integers(0, len(augment.TRAIN_ONLY_NAMES), k)
    shifts_K2 = rng.integers(0, 4, (k, 2))
    new_grids, new_shapes, fits_KG = _train_only_grids(
        grids_KG, shapes_KG, jnp.asarray(kinds_K), jnp.asarray(shifts_K2)
    )
    grids_KG = jnp.where(use_K[:, None, None, None], new_grids, grids_KG)
    shapes_KG = jnp.where(use_K[:, None, None], new_shapes, shapes_KG)
    fits_K = ~use_K | np.asarray(fits_KG)[:, :num_grids].all(axis=1)  # fillers aside
  grids_KG, shapes_KG = np.asarray(grids_KG), np.asarray(shapes_KG)
  copies = []
  for c in np.flatnonzero(fits_K):
    g = [augment.unpad_grid(grids_KG[c, i], shapes_KG[c, i]) for i in range(2 * n)]
    copies.append([Pair(g[2 * i], g[2 * i + 1]) for i in range(n)])
  return copies, int(k - fits_K.sum())


# ----------------------------------------------------------------- builder


def build_ttt_examples(
    task: Task, cfg: TTTDataConfig, seed: int, fmt: Format = COMPACT
) -> tuple[list[Example], TTTDataStats]:
  """The TTT examples of one task (see the module docstring), encoded in `fmt`, and
  their stats."""
  if not task.train:
    raise ValueError(f'{task.source}: task {task.id!r}: no demonstrations')
  if cfg.recipe == 'marc':
    return _marc_examples(task, cfg, seed, fmt)
  rng = np.random.default_rng(seed)
  n = len(task.train)
  copies, dropped_copies = _augmented_demos(task, cfg, seed, rng)
  examples: dict[bytes, Example] = {}
  counts = dict(candidates=0, duplicates=0, too_long=0)

  def add(bases: list[_Base]) -> None:
    for demos in copies:
      for prompt, target in bases:
        order = rng.permutation(prompt) if cfg.shuffle_order else prompt
        tokens, mask = fmt.encode_task(
            [demos[j] for j in order], demos[target].input, demos[target].output, cfg.loss
        )
        counts['candidates'] += 1
        key = tokens.tobytes()
        if len(tokens) > cfg.seq_len:
          counts['too_long'] += 1
        elif key in examples:
          counts['duplicates'] += 1
        else:
          examples[key] = (tokens, mask)

  direct = cfg.mode == 'direct_io'
  add(_direct_bases(n) if direct else _leave_one_out_bases(n))
  used_l2o = not direct and cfg.leave_two_out and n >= 3 and len(examples) < cfg.max_examples
  if used_l2o:
    add(_leave_two_out_bases(n))
  kept = list(examples.values())
  kept = [kept[i] for i in rng.permutation(len(kept))[: cfg.max_examples]]
  bases_per_copy = n + (n * (n - 1) if used_l2o else 0)
  stats = TTTDataStats(
      task_id=task.id,
      num_demos=n,
      num_candidates=counts['candidates'],
      num_duplicates=counts['duplicates'],
      num_too_long=counts['too_long'],
      num_too_large=dropped_copies * bases_per_copy,
      used_leave_two_out=used_l2o,
      num_examples=len(kept),
  )
  return kept, stats


def _marc_examples(
    task: Task, cfg: TTTDataConfig, seed: int, fmt: Format
) -> tuple[list[Example], TTTDataStats]:
  kept, counts = marc_ttt_data.build_marc_examples(
      task,
      seed,
      fmt,
      max_examples=cfg.max_examples,
      seq_len=cfg.seq_len,
      loss=cfg.loss,
      no_transform=cfg.no_transform,
  )
  return kept, TTTDataStats(
      task_id=task.id, num_demos=len(task.train), **counts._asdict(), num_examples=len(kept)
  )


# ----------------------------------------------------------------- packing


def row_length(lengths_N: np.ndarray, seq_len: int, length_bucket: int) -> int:
  """The row length a task with row lengths [N] trains at: the bucket of its longest row
  (format.bucket_length), at most seq_len; seq_len when length_bucket is 0."""
  if not length_bucket:
    return seq_len
  return min(seq_len, bucket_length(int(np.max(lengths_N, initial=1)), length_bucket))


def cut_rows(arrays: TTTArrays, length: int) -> TTTArrays:
  """One task's arrays with rows cut to `length` (>= every row's length)."""
  if int(np.max(arrays.lengths, initial=0)) > length:
    raise ValueError(f'cut_rows: a row of {np.max(arrays.lengths)} tokens exceeds {length}')
  cut = lambda x: None if x is None else x[..., :length]
  return arrays._replace(
      tokens=cut(arrays.tokens), loss_mask=cut(arrays.loss_mask), segments=cut(arrays.segments)
  )


def pack_rows(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
  """Example indices per row: first-fit decreasing (ties by index), so deterministic."""
  rows, free = [], []
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    fit = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
    if fit is None:
      rows.append([]), free.append(seq_len)
      fit = len(rows) - 1
    rows[fit].append(i)
    free[fit] -= lengths[i]
  return rows


def pack_tasks(
    per_task_examples: Sequence[Sequence[Example]],
    max_examples: int,
    seq_len: int,
    pad_id: int = COMPACT.pad_id,
    pack: bool = False,
) -> TTTArrays:
  """Lays T tasks' examples out in fixed [T, N=max_examples, S=seq_len] arrays: one per
  row, or packed several to a row (segment ids 1, 2, ... in each)."""
  t = len(per_task_examples)
  tokens = np.full((t, max_examples, seq_len), pad_id, np.int32)
  loss_mask = np.zeros((t, max_examples, seq_len), np.int32)
  segments = np.zeros((t, max_examples, seq_len), np.int32) if pack else None
  lengths = np.zeros((t, max_examples), np.int32)
  num_rows = np.zeros(t, np.int32)
  for ti, examples in enumerate(per_task_examples):
    if len(examples) > max_examples:
      raise ValueError(
          f'task {ti} has {len(examples)} examples, ' f'more than max_examples={max_examples}'
      )
    for ni, (toks, mask) in enumerate(examples):
      if len(toks) > seq_len or len(mask) != len(toks):
        raise ValueError(
            f'task {ti} example {ni}: {len(toks)} tokens '
            f'(mask {len(mask)}) do not fit seq_len={seq_len}'
        )
    if pack:
      rows = pack_rows([len(toks) for toks, _ in examples], seq_len)
    else:
      rows = [[i] for i in range(len(examples))]
    num_rows[ti] = len(rows)
    for ri, row in enumerate(rows):
      for segment, i in enumerate(row, start=1):
        toks, mask = examples[i]
        span = slice(lengths[ti, ri], lengths[ti, ri] + len(toks))
        tokens[ti, ri, span], loss_mask[ti, ri, span] = toks, mask
        if pack:
          segments[ti, ri, span] = segment
        lengths[ti, ri] += len(toks)
  return TTTArrays(tokens, loss_mask, lengths, num_rows, segments)
