"""The reference's inference queries (ekinakyurek/marc inference/preprocess.py), as a plan.

Per test input and leave-out count n (`get_leave_n_test_task`):
- identity queries: every subset of the demonstrations leaving n out (in
  `itertools.combinations` order of the left-out indices), each in its
  original order and then in `orders` random orders (`PermuteExamples`),
  deduplicated by content (two orders of equal demonstrations are one query);
- then one query per transform of `d8` (the reference's Transpose, Flip(0),
  Flip(1), Rotate(90), Rotate(180)): the transform applied to a randomly
  chosen identity query, dropped when it equals an identity query or an
  earlier transformed one (a task symmetric under it).
The random stream is the reference's: one `np.random.RandomState(seed)` per
(test input, n), orders drawn by `permutation`, each transform's base by the
index `rng.choice` draws. What we cannot match bit for bit: the reference
picks from `list(set(queries))`, an order set by Python's per-process string
hashing; we pick from the identity queries in first-occurrence order. The
index drawn is the same; which query it names follows the same uniform law
(tests/infer/test_marc_queries.py checks both against the reference's output
under 200 hash seeds).

Equality is the reference's `Task.__eq__` in its submission mode: the test
example's output is a copy of its input (we never look at the true output).
This module only plans (transform, demonstration order); prompts.py encodes
and fits them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import Task, grid_bytes


class Query(NamedTuple):
  d8: int  # the D8 element of the prompt (0: identity)
  demos: tuple[int, ...]  # indices into task.train, in prompt order


def _content(task: Task, test_index: int, query: Query) -> tuple[bytes, ...]:
  """What the reference's Task equality compares: the transformed demonstrations in order
  and the transformed test example (output = input)."""
  move = lambda g: grid_bytes(augment.numpy_d8(np.asarray(g), query.d8))
  test = move(task.test[test_index].input)
  return (*(move(g) for i in query.demos for g in task.train[i]), test, test)


def _identity_queries(task: Task, test_index: int, leave_out: int, orders: int, rng):
  """The deduplicated identity queries of one leave-out count, in first-occurrence order."""
  num_demos = len(task.train)
  found = {}
  for left_out in itertools.combinations(range(num_demos), leave_out):
    subset = tuple(i for i in range(num_demos) if i not in left_out)
    shuffled = [tuple(subset[j] for j in rng.permutation(len(subset))) for _ in range(orders)]
    for demos in (subset, *shuffled):
      query = Query(0, demos)
      found.setdefault(_content(task, test_index, query), query)
  return found


def queries(
    task: Task, test_index: int, leave_out: int, orders: int, d8: Sequence[int], seed: int
) -> list[Query]:
  """The identity queries, then one per non-identity element of `d8` (in that order)."""
  rng = np.random.RandomState(seed)
  identity = _identity_queries(task, test_index, leave_out, orders, rng)
  bases = list(identity.values())
  transformed = {}
  for k in d8:
    if k == 0 or not bases:  # no base: the reference's rng.choice([]) would raise
      continue
    base = bases[rng.randint(0, len(bases))]  # the index rng.choice(bases) draws
    query = Query(k, base.demos)
    key = _content(task, test_index, query)
    if key not in identity:
      transformed.setdefault(key, query)
  return bases + list(transformed.values())
