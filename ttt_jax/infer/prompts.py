"""Prompt variants for augmented inference (Akyürek et al. 2024, "Augmented inference").

Two recipes (`PromptConfig.recipe`). 'ours', the paper's prose as a product:
for each test input, every chosen D8 element x colour option (identity plus
random permutations keeping colour 0) x demonstration subset (all, or
leave-n-out) x demonstration order (original plus random orders). Each
variant keeps its transform, so its prediction maps back with the inverse.
Variants whose prompt plus largest plausible answer exceed `max_len` are
dropped; at most `max_variants` are kept per test input (the untransformed,
original-order prompt always first). Everything is seeded per (seed, task,
test input): the same config gives the same variants on every run.

'marc', the reference's queries as coded (marc_queries.py): the leave-n-out
identity queries in their original and `orders` random orders, one query per
non-identity element of `d8`; a query fits when its prompt plus an answer the
size of the test input is under `max_len` (the reference counts the test
output, which a submission run copies from the input), and when none fits,
the leave-(n+1)-out queries join the leave-n-out ones. No colour
permutations, no cap: `color_perms` must be 0, `max_variants` is not used.

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
from ttt_jax.infer import marc_queries, shapes

# The paper's inference transforms: identity, transpose, flips (two axes), rot90, rot180.
PAPER_D8 = (0, 4, 5, 7, 1, 2)
IDENTITY_COLORS = tuple(range(NUM_COLORS))
RECIPES = ('ours', 'marc')


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  recipe: str = 'ours'  # one of RECIPES (see the module docstring)
  d8: tuple[int, ...] = PAPER_D8  # D8 elements (augment.D8_NAMES indices)
  color_perms: int = 0  # random colour permutations (colour 0 kept) besides identity
  orders: int = 2  # random demonstration orders besides the original
  leave_out: int = 0  # 0: all demonstrations; n: every subset leaving n out
  max_variants: int = 64  # per test input ('ours')
  max_len: int = 8192  # prompt + largest plausible answer must fit ('marc': see above)
  seed: int = 0

  def __post_init__(self):
    if self.recipe not in RECIPES:
      raise ValueError(f'PromptConfig.recipe: {self.recipe!r} is not one of {RECIPES}')
    if self.recipe == 'marc' and (self.color_perms or 0 not in self.d8):
      raise ValueError(
          "PromptConfig: recipe 'marc' prompts without colour permutations and always "
          f'with the untransformed task: need color_perms=0 and 0 in d8, got '
          f'color_perms={self.color_perms}, d8={self.d8}'
      )
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


@dataclasses.dataclass(frozen=True)
class _Frame:
  """One test input's task under (d8, colors): its demonstrations, test input and the
  answer budget (the largest of its demonstration outputs and its test input)."""

  task: Task
  test_index: int
  d8: int
  colors: tuple[int, ...]
  pairs: list[tuple[np.ndarray, np.ndarray]]
  x: np.ndarray
  budget: int

  @classmethod
  def of(cls, task: Task, test_index: int, d8: int, colors, fmt: Format) -> _Frame:
    pairs = [
        (transform_grid(p.input, d8, colors), transform_grid(p.output, d8, colors))
        for p in task.train
    ]
    x = transform_grid(task.test[test_index].input, d8, colors)
    budget = max(fmt.answer_tokens(g.shape) for g in [x, *(y for _, y in pairs)])
    return cls(task, test_index, d8, colors, pairs, x, budget)

  def tokens(self, demos: tuple[int, ...], fmt: Format) -> np.ndarray:
    return fmt.encode_task([self.pairs[i] for i in demos], self.x)[0]

  def variant(self, demos: tuple[int, ...], tokens: np.ndarray) -> Variant:
    hypotheses = tuple(shapes.task_hypotheses([self.pairs[i] for i in demos], self.x))
    return Variant(
        self.task.id, self.test_index, self.d8, self.colors, demos, tokens, self.budget, hypotheses
    )


def _marc_variants(task: Task, test_index: int, config: PromptConfig, fmt: Format) -> list[Variant]:
  """The reference's queries that fit (get_preprocessed_tasks_single): leave-n-out, else
  leave-n-out and leave-(n+1)-out together."""
  frames = {}
  n = config.leave_out
  for leave_outs in ((n,), (n, n + 1)):
    variants = []
    for m in leave_outs:
      for d8, demos in marc_queries.queries(
          task, test_index, m, config.orders, config.d8, config.seed
      ):
        if d8 not in frames:
          frames[d8] = _Frame.of(task, test_index, d8, IDENTITY_COLORS, fmt)
        frame = frames[d8]
        tokens = frame.tokens(demos, fmt)
        if len(tokens) + fmt.answer_tokens(frame.x.shape) < config.max_len:
          variants.append(frame.variant(demos, tokens))
    if variants:
      return variants
  return []


def input_variants(
    task: Task, test_index: int, config: PromptConfig, fmt: Format = COMPACT
) -> list[Variant]:
  """The prompt variants of one test input in `fmt` (possibly none, if nothing fits max_len)."""
  if not task.train:
    raise ValueError(f'task {task.id}: no demonstrations to prompt with')
  if config.recipe == 'marc':
    return _marc_variants(task, test_index, config, fmt)
  rng = _rng(config, task.id, test_index)
  colour_options = _color_options(rng, config.color_perms)
  demo_orders = [
      order
      for subset in _subsets(len(task.train), config.leave_out)
      for order in _orders(rng, subset, config.orders)
  ]
  variants = []
  for d8 in config.d8:
    for colors in colour_options:
      frame = _Frame.of(task, test_index, d8, colors, fmt)
      for demos in demo_orders:
        tokens = frame.tokens(demos, fmt)
        if len(tokens) + frame.budget <= config.max_len:
          variants.append(frame.variant(demos, tokens))
  if len(variants) > config.max_variants:
    keep = np.sort(rng.choice(np.arange(1, len(variants)), config.max_variants - 1, replace=False))
    variants = [variants[0]] + [variants[i] for i in keep]
  return variants


def task_variants(task: Task, config: PromptConfig, fmt: Format = COMPACT) -> list[Variant]:
  """Variants of every test input of a task, in test order."""
  return [v for i in range(len(task.test)) for v in input_variants(task, i, config, fmt)]
