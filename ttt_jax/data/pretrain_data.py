"""The stage-1 data stream: augmented whole-task sequences, length-bucketed.

Each training example is one task re-drawn at random: one of its solved
pairs is the query, the others (shuffled) the demonstrations, all under

  1. optionally a geometric *variant* (the paper's input-only / output-only /
     both): one D8 element applied to only the inputs, only the outputs, or
     both. The result is a new, consistent task: its rule is the old rule
     composed with the transform (output-only: y' = k(f(x))),
  2. optionally a training-only op (upscale, tile, translate, reflect) on
     every grid,
  3. a random D8 element and colour permutation (0 kept) on every grid,

encoded in a token format (ttt_jax/formats; the compact one by default).
Too long: demonstrations are dropped from the end until it fits; a query
that does not fit with one demonstration is re-drawn (counted in
`StreamStats`).

The stream is a pure function of (seed, step): example i uses the task at
position i % n of the seed's permutation for epoch i // n and its own
`default_rng([seed, i, attempt])`, so resuming at step k needs only k. The
model has no segment-aware attention (llama.forward takes a padding mask,
not segment ids), so instead of packing, `bucket_steps` batches' worth of
examples are sorted by length and cut into batches, each padded to a
multiple of `pad_multiple` (few distinct shapes, so few recompilations).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence

import jax
import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import NUM_COLORS, Pair, Task, drop_contaminated, load_tasks
from ttt_jax.data.format import loss_mode, pad_rows
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT

VARIANT_MODES = ('input', 'output', 'both')
_MAX_ATTEMPTS = 8


@dataclasses.dataclass(frozen=True)
class PretrainDataConfig:
  max_len: int = 2048
  batch_size: int = 8
  loss: str = 'all_but_first'
  min_demos: int = 1
  d8: bool = True
  colors: bool = True
  shuffle_order: bool = True
  variant_prob: float = 0.3  # input-only / output-only / both D8 variant
  train_only_prob: float = 0.0  # upscale, tile, translate, reflect
  bucket_steps: int = 16  # batches sorted by length together
  pad_multiple: int = 128
  seed: int = 0

  def __post_init__(self):
    loss_mode(self.loss)  # raises on an unknown mode
    for name in ('max_len', 'batch_size', 'min_demos', 'bucket_steps', 'pad_multiple'):
      if getattr(self, name) < 1:
        raise ValueError(f'PretrainDataConfig.{name} must be >= 1, got {getattr(self, name)}')
    for name in ('variant_prob', 'train_only_prob'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(
            f'PretrainDataConfig.{name} must be in [0, 1], ' f'got {getattr(self, name)}'
        )


@dataclasses.dataclass
class StreamStats:
  """Counts since the stream object was made (for logging, not for state)."""

  examples: int = 0
  demos_cut: int = 0  # examples that lost demonstrations to fit max_len
  redrawn: int = 0  # draws dropped: too long with min_demos, or grids > 30x30


# ------------------------------------------------------------------- tasks


def load_training_tasks(
    selectors: Sequence[str] | str, guard_selector: str = ''
) -> tuple[list[Task], dict]:
  """Tasks of every selector; with `guard_selector` (the evaluation set), every
  training task sharing a pair with it is dropped (`arc.drop_contaminated`)."""
  selectors = (selectors,) if isinstance(selectors, str) else tuple(selectors)
  tasks, report = [], {'loaded': {}, 'contaminated_dropped': 0}
  for selector in selectors:
    loaded, load_report = load_tasks(selector)
    if not loaded:
      raise ValueError(f'training selector {selector!r} selected no valid tasks')
    tasks += loaded
    report['loaded'][selector] = len(loaded)
  if guard_selector:
    eval_tasks, _ = load_tasks(guard_selector)
    if not eval_tasks:
      raise ValueError(f'contamination guard selector {guard_selector!r} selected no tasks')
    tasks, contamination = drop_contaminated(tasks, eval_tasks)
    report['contaminated_dropped'] = contamination.num_dropped
  return tasks, report


def solved_pairs(task: Task) -> list[Pair]:
  return [*task.train, *(p for p in task.test if p.output is not None)]


def split_tasks(tasks: Sequence[Task], val_frac: float, seed: int) -> tuple[list[Task], list[Task]]:
  """(train, validation) by a seeded hash of the task id: stable under reordering."""

  def in_val(task: Task) -> bool:  # sha1, not crc32: crc32 of similar ids correlates
    digest = hashlib.sha1(f'{seed}:{task.id}'.encode()).digest()
    return int.from_bytes(digest[:8], 'big') / 2**64 < val_frac

  return [t for t in tasks if not in_val(t)], [t for t in tasks if in_val(t)]


def _shortest_first(task: Task, fmt: Format) -> list[Pair]:
  return sorted(solved_pairs(task), key=lambda p: fmt.pair_tokens(*p))


def fits(task: Task, cfg: PretrainDataConfig, fmt: Format = COMPACT) -> bool:
  """Whether some query with `min_demos` demonstrations fits (untransformed)."""
  pairs = _shortest_first(task, fmt)
  if len(pairs) <= cfg.min_demos:
    return False
  return fmt.task_tokens(pairs[1 : cfg.min_demos + 1], pairs[0]) <= cfg.max_len


# ---------------------------------------------------------- augmentations


def geometric_variant(pairs: Sequence[Pair], mode: str, k: int) -> list[Pair]:
  """D8 element k on the inputs, the outputs, or both: a new consistent task."""
  if mode not in VARIANT_MODES:
    raise ValueError(f'variant mode {mode!r}; expected one of {VARIANT_MODES}')
  on_in, on_out = mode in ('input', 'both'), mode in ('output', 'both')
  return [
      Pair(augment.numpy_d8(x, k) if on_in else x, augment.numpy_d8(y, k) if on_out else y)
      for x, y in pairs
  ]


def d8_and_colors(pairs: Sequence[Pair], k: int, perm: np.ndarray) -> list[Pair]:
  """The invertible augmentation (augment.Transform's numpy twin) on every grid."""
  return [Pair(perm[augment.numpy_d8(x, k)], perm[augment.numpy_d8(y, k)]) for x, y in pairs]


@jax.jit
def _train_only_one(grid, shape, kind, shift):
  return augment.apply_train_only(grid, shape, kind, shift)


def train_only(pairs: Sequence[Pair], kind: int, shift: tuple[int, int]) -> list[Pair] | None:
  """Training-only op `augment.TRAIN_ONLY_NAMES[kind]` on every grid; None if one
  grows past 30x30."""

  def one(g):
    out, shape, ok = _train_only_one(*augment.pad_grid(g), kind, np.asarray(shift))
    return augment.unpad_grid(out, shape) if bool(ok) else None

  out = [(one(x), one(y)) for x, y in pairs]
  if any(g is None for p in out for g in p):
    return None
  return [Pair(x, y) for x, y in out]


def augmented_pairs(
    task: Task, rng: np.random.Generator, cfg: PretrainDataConfig
) -> list[Pair] | None:
  """The task's solved pairs under one random draw; None if a grid outgrew 30x30."""
  pairs = solved_pairs(task)
  if rng.random() < cfg.variant_prob:
    pairs = geometric_variant(pairs, VARIANT_MODES[rng.integers(3)], int(rng.integers(1, 8)))
  if rng.random() < cfg.train_only_prob:
    pairs = train_only(
        pairs,
        int(rng.integers(len(augment.TRAIN_ONLY_NAMES))),
        tuple(int(s) for s in rng.integers(0, 4, 2)),
    )
    if pairs is None:
      return None
  k = int(rng.integers(8)) if cfg.d8 else 0
  colors = augment.numpy_color_permutation(rng) if cfg.colors else range(NUM_COLORS)
  perm = np.asarray(colors, np.int32)
  return d8_and_colors(pairs, k, perm)


def query_sequence(
    pairs: Sequence[Pair], rng: np.random.Generator, cfg: PretrainDataConfig, fmt: Format = COMPACT
) -> tuple[np.ndarray, np.ndarray, int] | None:
  """(tokens, loss_mask, demos cut) with a random query, or None if too long."""
  query = int(rng.integers(len(pairs)))
  demos = [p for i, p in enumerate(pairs) if i != query]
  if cfg.shuffle_order:
    demos = [demos[i] for i in rng.permutation(len(demos))]
  budget = cfg.max_len - 1 - fmt.pair_tokens(*pairs[query])
  lengths = np.cumsum([fmt.pair_tokens(x, y) for x, y in demos])
  keep = int(np.searchsorted(lengths, budget, side='right'))
  # The estimate is exact for the compact format; a text format's prompt text costs more.
  while keep >= min(cfg.min_demos, len(demos)) and budget >= 0:
    tokens, loss_mask = fmt.encode_task(
        demos[:keep], pairs[query].input, pairs[query].output, cfg.loss
    )
    if len(tokens) <= cfg.max_len:
      return tokens, loss_mask, len(demos) - keep
    keep -= 1
  return None


# ------------------------------------------------------------------ stream


class PretrainStream:
  """Batches of augmented task sequences; `batch(step)` is pure in (seed, step)."""

  def __init__(self, tasks: Sequence[Task], cfg: PretrainDataConfig, fmt: Format = COMPACT):
    self.cfg, self.fmt = cfg, fmt
    self.tasks = [t for t in tasks if fits(t, cfg, fmt)]
    self.num_unfit_tasks = len(tasks) - len(self.tasks)
    if not self.tasks:
      raise ValueError(
          f'no training task fits max_len={cfg.max_len} with '
          f'{cfg.min_demos} demonstration(s) ({len(tasks)} given)'
      )
    self.stats = StreamStats()

  def task_index(self, example: int) -> int:
    n = len(self.tasks)
    epoch_rng = np.random.default_rng([self.cfg.seed, example // n])
    return int(epoch_rng.permutation(n)[example % n])

  def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Example `index` of the stream: (tokens int32 [S], loss_mask int32 [S])."""
    task = self.tasks[self.task_index(index)]
    for attempt in range(_MAX_ATTEMPTS):
      rng = np.random.default_rng([self.cfg.seed, index, attempt])
      pairs = augmented_pairs(task, rng, self.cfg)
      made = None if pairs is None else query_sequence(pairs, rng, self.cfg, self.fmt)
      if made is not None:
        self.stats.examples += 1
        self.stats.demos_cut += made[2] > 0
        return made[0], made[1]
      self.stats.redrawn += 1
    # The plain task with its shortest pairs fits (checked by `fits`).
    pairs = _shortest_first(task, self.fmt)
    self.stats.examples += 1
    return self.fmt.encode_task(
        pairs[1 : self.cfg.min_demos + 1], pairs[0].input, pairs[0].output, self.cfg.loss
    )

  @functools.lru_cache(maxsize=2)
  def _bucket(self, bucket: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The bucket's batches of examples, similar lengths together."""
    cfg = self.cfg
    first = bucket * cfg.bucket_steps * cfg.batch_size
    examples = [self.example(i) for i in range(first, first + cfg.bucket_steps * cfg.batch_size)]
    examples.sort(key=lambda e: len(e[0]))  # stable: ties keep stream order
    batches = [examples[b : b + cfg.batch_size] for b in range(0, len(examples), cfg.batch_size)]
    order = np.random.default_rng([cfg.seed, bucket, 1]).permutation(len(batches))
    return [batches[i] for i in order]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """Step's batch: tokens, mask (real tokens), loss_mask, all int32 [B, S]."""
    examples = self._bucket(step // self.cfg.bucket_steps)[step % self.cfg.bucket_steps]
    return pad_batch(examples, self.cfg.pad_multiple, self.cfg.max_len, self.fmt.pad_id)


def pad_batch(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    pad_multiple: int,
    max_len: int,
    pad_id: int = COMPACT.pad_id,
) -> dict[str, np.ndarray]:
  """Right-pads with `pad_id` to the longest example rounded up to `pad_multiple`."""
  pad = lambda rows, fill: pad_rows(rows, pad_multiple, fill, max_len)
  return {
      'tokens': pad([t for t, _ in examples], pad_id),
      'mask': pad([np.ones(len(t), np.int32) for t, _ in examples], 0),
      'loss_mask': pad([m for _, m in examples], 0),
  }


# -------------------------------------------------------------- validation


def validation_examples(
    tasks: Sequence[Task], cfg: PretrainDataConfig, max_examples: int, fmt: Format = COMPACT
) -> tuple[list[dict], int]:
  """Each held-out task's test pairs, unaugmented: the full sequence (for the
  loss), the prompt (for greedy decoding) and the expected grid. Returns the
  examples (at most `max_examples`) and how many were too long."""
  examples, too_long = [], 0
  for task in tasks:
    for pair in task.test:
      if pair.output is None:
        continue
      tokens, loss_mask = fmt.encode_task(task.train, pair.input, pair.output, cfg.loss)
      if len(tokens) > cfg.max_len:
        too_long += 1
        continue
      prompt, _ = fmt.encode_task(task.train, pair.input, None, cfg.loss)
      examples.append(
          {
              'task_id': task.id,
              'tokens': tokens,
              'loss_mask': loss_mask,
              'prompt': prompt,
              'output': np.asarray(pair.output),
          }
      )
  return examples[:max_examples], too_long
