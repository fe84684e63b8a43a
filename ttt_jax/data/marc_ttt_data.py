"""The reference's TTT data (ekinakyurek/marc, ttt/preprocess.py process_task):
`TTTDataConfig.recipe='marc'`.

Per task and seed, as the reference builds it:
  1. Leave-one-out tasks: demonstration i the test, the others the prompt in their order.
  2. Each under each of the 23 augmenters (marc_augmenters.py), inputs and outputs alike;
     a task with a grid past 30x30 dropped. With the untransformed tasks, deduplicated.
  3. One copy of each with its colours permuted (PermuteColors: 0 kept; each used colour
     goes to an unused one while any is left, then the used ones swap among themselves)
     and its demonstrations in a random order (PermuteExamples); copies and originals
     together, deduplicated. `no_transform` (the reference's --no_transform) skips step 2
     and the colour half of step 3.
  4. Encoded in our format; an example of `seq_len` tokens or more dropped (the reference
     keeps those under 8192 tokens).
  5. Over `max_examples` (250): shuffled, the first `max_examples` kept. Under: topped up
     with the leave-two-out examples (steps 1-4 with demonstrations i and j out, i the
     test), in order, up to `max_examples`. None at all: the leave-two-out ones instead.

Equal to the reference bit for bit: the tasks and their grids, the dedupe, the counts,
RandomTranslateXY's shifts, the colour and order draws given the order the tasks come
in (np.random.RandomState(seed) drawn in the reference's sequence, down to the order in
which its Python sets list colours) and the cap's shuffle given its input order
(tests/data/test_marc_ttt_data.py, against goldens from the reference). Not equal: the
reference takes its tasks out of Python sets, in an order that changes with
PYTHONHASHSEED, i.e. at random in every process; which task draws which colour
permutation and which leave-two-out examples top up follow that order. We draw colours
in the tasks' first-seen order and replace the set's order by a seeded shuffle: the same
distribution, and the data are a function of the seed. When no leave-one-out example fits,
the reference keeps every leave-two-out one (there may be more than 250); our rows hold
`max_examples`, so those are capped like leave-one-out ones.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import NUM_COLORS, Pair, Task
from ttt_jax.data.marc_augmenters import augment_pairs
from ttt_jax.formats.base import Format

Example = tuple[np.ndarray, np.ndarray]  # (tokens int32 [S], loss_mask int32 [S])


class Candidate(NamedTuple):
  """One TTT task: `pairs[:-1]` its demonstrations, `pairs[-1]` its test pair, indices into
  version `version` of the task's demonstrations (0: as given, a: AUGMENTERS[a - 1]), under
  the colour map `colors` (old colour c -> colors[c]; None: as is)."""

  version: int
  pairs: tuple[int, ...]
  colors: tuple[int, ...] | None = None


class MarcCounts(NamedTuple):
  num_candidates: int  # tasks formed (under every augmenter, and the copies)
  num_duplicates: int
  num_too_long: int  # of the examples encoded (leave-two-out ones only as far as needed)
  num_too_large: int  # a grid past 30x30 under an augmenter
  used_leave_two_out: bool


@dataclasses.dataclass(frozen=True)
class Demonstrations:
  """A task's demonstration pairs in every version, padded (augment.py's conventions)."""

  grids: np.ndarray  # int8 [V, N, 2, 30, 30]: V = 1 (as given) + one per augmenter used
  shapes: np.ndarray  # int32 [V, N, 2, 2]
  fits: np.ndarray  # bool [V, N]: both grids within 30x30

  @classmethod
  def of(cls, pairs: Sequence[Pair], seed: int, transform: bool = True) -> Demonstrations:
    padded = [[augment.pad_grid(g) for g in (p.input, p.output)] for p in pairs]
    grids = np.array([[g for g, _ in pair] for pair in padded], np.int8)[None]
    shapes = np.array([[s for _, s in pair] for pair in padded], np.int32)[None]
    fits = np.ones((1, len(pairs)), bool)
    if transform:
      more_grids, more_shapes, more_fits = augment_pairs(pairs, seed)
      grids = np.concatenate([grids, more_grids.astype(np.int8)])
      shapes = np.concatenate([shapes, more_shapes])
      fits = np.concatenate([fits, more_fits])
    return cls(grids, shapes, fits)

  def content(self, c: Candidate) -> np.ndarray:
    """int8 [k, 2, 30, 30]: the grids of c's pairs, colours mapped (FILL stays FILL)."""
    grids = self.grids[c.version, list(c.pairs)]
    if c.colors is None:
      return grids
    return np.array(c.colors + (augment.FILL,), np.int8)[grids]  # FILL = -1: the last entry

  def key(self, c: Candidate) -> bytes:
    # Padded grids are canonical: equal bytes iff equal grids.
    return self.content(c).tobytes()

  def pairs(self, c: Candidate) -> list[Pair]:
    grids, shapes = self.content(c), self.shapes[c.version, list(c.pairs)]
    unpad = augment.unpad_grid
    return [Pair(unpad(g[0], s[0]), unpad(g[1], s[1])) for g, s in zip(grids, shapes)]


# -------------------------------------------------------------------------- tasks


def leave_out(num_demos: int, leave: int) -> list[tuple[int, ...]]:
  """get_test_time_train_data's tasks as pair indices: for each test demonstration i (in
  order) and each choice of `leave - 1` more to leave out (itertools.combinations' order),
  the remaining demonstrations in order, then i."""
  tasks = []
  for i in range(num_demos):
    others = [j for j in range(num_demos) if j != i]
    for dropped in itertools.combinations(others, leave - 1):
      tasks.append(tuple(j for j in others if j not in dropped) + (i,))
  return tasks


def unique(demos: Demonstrations, candidates: Iterable[Candidate]) -> list[Candidate]:
  """The first of each distinct content, in order."""
  first = {}
  for c in candidates:
    first.setdefault(demos.key(c), c)
  return list(first.values())


def color_map(content: np.ndarray, rng: np.random.RandomState) -> tuple[int, ...]:
  """PermuteColors.apply_to_task's map for a task's grids (in the reference's order: the
  demonstrations' inputs and outputs, then the test pair's), drawn from `rng` as it draws.

  The reference lists colours out of Python sets, whose order for small ints depends on
  what was inserted in which order (not always ascending); the same sets built from the
  same distinct colours in the same first-seen order list them the same way, so the
  draws line up."""
  cells = content[content >= 0]
  colors, first_seen = np.unique(cells, return_index=True)
  used = set(colors[np.argsort(first_seen)].tolist()) - {0}
  unused = list(set(range(1, NUM_COLORS)) - used)
  used = list(used)
  rng.shuffle(unused)
  swaps = rng.permutation(used).tolist()
  new_color = {0: 0}
  for color in used:
    if color in new_color:
      continue
    if unused:
      new_color[color] = unused.pop()
    else:  # no unused colour left: swap with a used one
      other = swaps.pop()
      new_color[other], new_color[color] = color, other
      if color in swaps:
        swaps.remove(color)
  return tuple(new_color.get(c, c) for c in range(NUM_COLORS))


def permuted_copies(
    demos: Demonstrations, candidates: Sequence[Candidate], rng: np.random.RandomState, colors: bool
) -> list[Candidate]:
  """One copy of each candidate, in order: colours permuted (if `colors`), then the
  demonstrations (PermuteExamples: rng.permutation of their count)."""
  copies = []
  for c in candidates:
    if colors:
      c = c._replace(colors=color_map(demos.content(c), rng))
    order = rng.permutation(len(c.pairs) - 1)
    copies.append(c._replace(pairs=tuple(c.pairs[i] for i in order) + c.pairs[-1:]))
  return copies


def augmented_tasks(demos: Demonstrations, leave: int) -> tuple[list[Candidate], dict[str, int]]:
  """Steps 1-2 of the module docstring: the distinct leave-`leave`-out tasks under every
  augmenter, then as given (in that order), and counts: candidates, duplicates, too_large."""
  versions = [*range(1, len(demos.grids)), 0]  # augmented_tasks + initial_tasks
  formed = [Candidate(v, p) for v in versions for p in leave_out(demos.grids.shape[1], leave)]
  fitting = [c for c in formed if demos.fits[c.version, list(c.pairs)].all()]
  tasks = unique(demos, fitting)
  counts = dict(
      candidates=len(formed),
      duplicates=len(fitting) - len(tasks),
      too_large=len(formed) - len(fitting),
  )
  return tasks, counts


def ttt_tasks(
    demos: Demonstrations, leave: int, seed: int, transform: bool = True
) -> tuple[list[Candidate], dict[str, int]]:
  """get_test_time_train_data (steps 1-3 of the module docstring) -> (tasks in a seeded
  order, counts: candidates, duplicates, too_large)."""
  originals, counts = augmented_tasks(demos, leave)
  copies = permuted_copies(demos, originals, np.random.RandomState(seed), colors=transform)
  tasks = unique(demos, copies + originals)
  counts['candidates'] += len(copies)
  counts['duplicates'] += len(copies) + len(originals) - len(tasks)
  # In place of the order of the reference's Python set (random per process).
  order = np.random.default_rng([seed, leave]).permutation(len(tasks))
  return [tasks[i] for i in order], counts


# ------------------------------------------------------------------------ examples


def select(first: list, more: Callable[[], Iterable], max_examples: int, seed: int) -> list:
  """process_task's choice from the leave-one-out examples `first` (in order) and the
  leave-two-out ones `more()`, computed only if needed."""
  if not first:  # The reference keeps them all; our rows hold max_examples.
    return _shuffled_cap(list(more()), max_examples, seed)
  if len(first) < max_examples:
    return first + list(itertools.islice(more(), max_examples - len(first)))
  return _shuffled_cap(first, max_examples, seed)


def _shuffled_cap(examples: list, max_examples: int, seed: int) -> list:
  if len(examples) <= max_examples:
    return examples
  examples = list(examples)
  np.random.RandomState(seed).shuffle(examples)  # process_task's own generator
  return examples[:max_examples]


def build_marc_examples(
    task: Task,
    seed: int,
    fmt: Format,
    *,
    max_examples: int,
    seq_len: int,
    loss: str,
    no_transform: bool = False,
) -> tuple[list[Example], MarcCounts]:
  """The TTT examples of one task (the module docstring), encoded in `fmt`, and counts."""
  seed %= 2**32  # RandomState's seed range
  demos = Demonstrations.of(task.train, seed, transform=not no_transform)
  counts = dict(candidates=0, duplicates=0, too_large=0, too_long=0)

  def examples(leave: int) -> Iterator[Example]:
    tasks, task_counts = ttt_tasks(demos, leave, seed, transform=not no_transform)
    for name, count in task_counts.items():
      counts[name] += count
    for c in tasks:
      *demonstrations, test = demos.pairs(c)
      tokens, mask = fmt.encode_task(demonstrations, test.input, test.output, loss)
      if len(tokens) < seq_len:
        yield tokens, mask
      else:
        counts['too_long'] += 1

  leave_one_out = list(examples(1))
  used_leave_two_out = len(leave_one_out) < max_examples and len(task.train) > 1
  kept = select(leave_one_out, lambda: examples(2), max_examples, seed)
  return kept, MarcCounts(
      num_candidates=counts['candidates'],
      num_duplicates=counts['duplicates'],
      num_too_long=counts['too_long'],
      num_too_large=counts['too_large'],
      used_leave_two_out=used_leave_two_out,
  )
