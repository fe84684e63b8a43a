"""Prompt variants for augmented inference (Akyürek et al. 2024, "Augmented inference").

For each test input: every chosen D8 element x colour option (identity plus
random permutations keeping colour 0) x demonstration subset (all, or
leave-n-out) x demonstration order (original plus random orders). Each
variant keeps its transform, so its prediction maps back with the inverse.
Variants whose prompt plus largest plausible answer exceed `max_len` are
dropped; at most `max_variants` are kept per test input (the untransformed,
original-order prompt always first). Everything is seeded per (seed, task,
test input): the same config gives the same variants on every run.

The transforms are built in numpy (they are few and small); `Variant.transform`
gives the `augment.Transform` that `vote.vote_transformed` inverts.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import jax.numpy as jnp
import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import NUM_COLORS, Task
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import shapes

# The paper's inference transforms: identity, transpose, flips (two axes), rot90, rot180.
PAPER_D8 = (0, 4, 5, 7, 1, 2)
IDENTITY_COLORS = tuple(range(NUM_COLORS))


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  d8: tuple[int, ...] = PAPER_D8  # D8 elements (augment.D8_NAMES indices)
  color_perms: int = 0  # random colour permutations (colour 0 kept) besides identity
  orders: int = 2  # random demonstration orders besides the original
  leave_out: int = 0  # 0: all demonstrations; n: every subset leaving n out
  max_variants: int = 64  # per test input
  max_len: int = 8192  # prompt + largest plausible answer must fit
  seed: int = 0

  def __post_init__(self):
    bad = [k for k in self.d8 if k not in range(8)]
    if not self.d8 or bad or len(set(self.d8)) != len(self.d8):
      raise ValueError(f'PromptConfig.d8 {self.d8!r}: need distinct D8 elements in 0..7')
    for name in ('color_perms', 'orders', 'leave_out'):
      if getattr(self, name) < 0:
        raise ValueError(f'PromptConfig.{name} must be >= 0, got {getattr(self, name)}')
    if self.max_variants < 1 or self.max_len < 1:
      raise ValueError(
          f'PromptConfig.max_variants ({self.max_variants}) and max_len '
          f'({self.max_len}) must be >= 1'
      )


@dataclasses.dataclass(frozen=True, eq=False)
class Variant:
  """One prompt: the test input `test_index` of `task_id` under (d8, colors), with the
  demonstrations `demos` (indices into task.train, in prompt order)."""

  task_id: str
  test_index: int
  d8: int
  colors: tuple[int, ...]
  demos: tuple[int, ...]
  tokens: np.ndarray  # int32 [S], the prompt: it ends where the answer starts
  answer_budget: int  # tokens of the largest plausible answer, its stop token included
  shapes: tuple[tuple[int, int], ...] = ()  # output-shape hypotheses, in this variant's frame

  @property
  def transform(self) -> augment.Transform:
    return augment.Transform(jnp.int32(self.d8), jnp.asarray(self.colors, jnp.int32))

  @property
  def is_identity(self) -> bool:
    return self.d8 == 0 and self.colors == IDENTITY_COLORS


def transform_grid(grid: np.ndarray, d8: int, colors) -> np.ndarray:
  """D8 element d8, then colour c -> colors[c] (augment.apply_transform on an unpadded grid)."""
  return np.asarray(colors)[augment.numpy_d8(np.asarray(grid), d8)]


def invert_grid(grid: np.ndarray, d8: int, colors) -> np.ndarray:
  """The inverse of `transform_grid`: undo the colours, then the D8 element."""
  inverse_colors = np.argsort(np.asarray(colors))
  return augment.numpy_d8(inverse_colors[np.asarray(grid)], int(augment.D8_INVERSE[d8]))


def _rng(config: PromptConfig, task_id: str, test_index: int) -> np.random.Generator:
  return np.random.default_rng([config.seed, zlib.crc32(task_id.encode()), test_index])


def _color_options(rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
  options = [IDENTITY_COLORS]
  for _ in range(n):
    options.append(augment.numpy_color_permutation(rng))
  return list(dict.fromkeys(options))


def _subsets(num_demos: int, leave_out: int) -> list[tuple[int, ...]]:
  if leave_out == 0 or num_demos - leave_out < 1:
    return [tuple(range(num_demos))]
  return list(itertools.combinations(range(num_demos), num_demos - leave_out))


def _orders(rng: np.random.Generator, subset: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
  orders = [subset] + [tuple(int(i) for i in rng.permutation(subset)) for _ in range(n)]
  return list(dict.fromkeys(orders))  # a short subset has fewer distinct orders


def input_variants(
    task: Task, test_index: int, config: PromptConfig, fmt: Format = COMPACT
) -> list[Variant]:
  """The prompt variants of one test input in `fmt` (possibly none, if nothing fits max_len)."""
  if not task.train:
    raise ValueError(f'task {task.id}: no demonstrations to prompt with')
  rng = _rng(config, task.id, test_index)
  test_input = task.test[test_index].input
  colour_options = _color_options(rng, config.color_perms)
  demo_orders = [
      order
      for subset in _subsets(len(task.train), config.leave_out)
      for order in _orders(rng, subset, config.orders)
  ]
  variants = []
  for d8 in config.d8:
    for colors in colour_options:
      pairs = [
          (transform_grid(p.input, d8, colors), transform_grid(p.output, d8, colors))
          for p in task.train
      ]
      x = transform_grid(test_input, d8, colors)
      budget = max(fmt.answer_tokens(g.shape) for g in [x, *(y for _, y in pairs)])
      for demos in demo_orders:
        tokens, _ = fmt.encode_task([pairs[i] for i in demos], x)
        if len(tokens) + budget <= config.max_len:
          hypotheses = tuple(shapes.task_hypotheses([pairs[i] for i in demos], x))
          variants.append(
              Variant(task.id, test_index, d8, colors, demos, tokens, budget, hypotheses)
          )
  if len(variants) > config.max_variants:
    keep = np.sort(rng.choice(np.arange(1, len(variants)), config.max_variants - 1, replace=False))
    variants = [variants[0]] + [variants[i] for i in keep]
  return variants


def task_variants(task: Task, config: PromptConfig, fmt: Format = COMPACT) -> list[Variant]:
  """Variants of every test input of a task, in test order."""
  return [v for i in range(len(task.test)) for v in input_variants(task, i, config, fmt)]
