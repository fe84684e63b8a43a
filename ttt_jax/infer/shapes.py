"""Output-shape hypotheses from a task's demonstrations alone.

Each axis (rows, columns) of the test output is predicted by every simple rule
that holds on all demonstrations: the output's size is constant, or the input's
size times k, or divided by k, or plus d, or the input's OTHER axis times k
(a transpose, for instance). The hypotheses are the combinations of the two
axes' predictions, simplest rules first; when no rule holds on an axis, the test
input's size on that axis is the fallback. Only shapes within 1..30 are kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ttt_jax.data.arc import MAX_SIDE

Shape = tuple[int, int]
MAX_HYPOTHESES = 4


def _axis_predictions(pairs: Sequence[tuple[Shape, Shape]], test: Shape, axis: int) -> list[int]:
  """The test output's size on `axis` under every rule that fits every demonstration."""
  out = [o[axis] for _, o in pairs]
  predictions = []

  def add(value):
    if isinstance(value, int) and 1 <= value <= MAX_SIDE and value not in predictions:
      predictions.append(value)

  for source in (axis, 1 - axis):  # the same axis first, then the other one
    ins = [i[source] for i, _ in pairs]
    if all(o == i for o, i in zip(out, ins)):
      add(test[source])
    if all(o % i == 0 for o, i in zip(out, ins)) and len({o // i for o, i in zip(out, ins)}) == 1:
      add(test[source] * (out[0] // ins[0]))
    if all(i % o == 0 for o, i in zip(out, ins)) and len({i // o for o, i in zip(out, ins)}) == 1:
      k = ins[0] // out[0]
      if test[source] % k == 0:
        add(test[source] // k)
    if source == axis and len({o - i for o, i in zip(out, ins)}) == 1:
      add(test[source] + out[0] - ins[0])
  if len(set(out)) == 1:
    add(out[0])
  return predictions


def hypotheses(pairs: Sequence[tuple[Shape, Shape]], test_input: Shape) -> list[Shape]:
  """At most MAX_HYPOTHESES output shapes for the test input, most plausible first."""
  if not pairs:
    return [tuple(test_input)]
  per_axis = [_axis_predictions(pairs, test_input, axis) or [test_input[axis]] for axis in (0, 1)]
  return list(itertools.islice(itertools.product(*per_axis), MAX_HYPOTHESES))


def task_hypotheses(train, test_input) -> list[Shape]:
  """`hypotheses` of grids: train is a sequence of (input, output) arrays."""
  return hypotheses([(x.shape, y.shape) for x, y in train], test_input.shape)
