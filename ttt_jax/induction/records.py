"""One executed program's outcome on one task, and the vote over the correct ones.

A `ProgramRecord` is what the induction half hands on: it is written one JSON line
per program by `launch.verify_programs` and `launch.induce`, read from BARC's
released execution results, and consumed by the vote and the ensemble. Grids are
plain lists of lists of ints (the submission's format); an output that is not a
valid grid is `None` in `test_outputs`, its reason in `error`.

A program is correct iff it reproduced every demonstration output exactly. The
test outputs of the correct programs are majority-voted, per test input, top 2
(ties: the output met first wins, as `collections.Counter.most_common` orders them).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

Grid = list[list[int]]


@dataclasses.dataclass(frozen=True)
class ProgramRecord:
  """One program run on one task's demonstration and test inputs."""

  task_id: str
  program: str  # a file name or a sample id: what the program is called in reports
  train_verdicts: tuple[bool, ...]  # one per demonstration: output == the demo's output
  test_outputs: tuple[Grid | None, ...]  # one per test input; None: no valid grid
  test_verdicts: tuple[bool, ...] | None = None  # where the test outputs are known
  error: str | None = None  # the first failure's reason, if any

  @property
  def correct(self) -> bool:
    """Reproduces every demonstration (a task always has at least one)."""
    return bool(self.train_verdicts) and all(self.train_verdicts)

  def to_json(self) -> dict[str, Any]:
    record = dataclasses.asdict(self)
    record['train_verdicts'] = list(self.train_verdicts)
    record['test_outputs'] = list(self.test_outputs)
    if self.test_verdicts is not None:
      record['test_verdicts'] = list(self.test_verdicts)
    return record

  @classmethod
  def from_json(cls, record: dict[str, Any]) -> ProgramRecord:
    verdicts = record.get('test_verdicts')
    return cls(
        task_id=str(record['task_id']),
        program=str(record['program']),
        train_verdicts=tuple(bool(v) for v in record['train_verdicts']),
        test_outputs=tuple(record['test_outputs']),
        test_verdicts=None if verdicts is None else tuple(bool(v) for v in verdicts),
        error=record.get('error'),
    )


def _key(grid: Grid) -> tuple[tuple[int, ...], ...]:
  return tuple(tuple(row) for row in grid)


def vote(
    records: Iterable[ProgramRecord], num_tests: int, *, top: int = 2, carry_over: bool = False
) -> list[list[tuple[Grid, int]]]:
  """Per test input, the `top` most common outputs of the correct programs, with counts.

  Only correct programs vote, and only with valid grids. An empty list for a test
  input means no correct program answered it. `carry_over=True` reproduces BARC's
  evaluation.py, whose counter is not reset between a task's test inputs (test input
  i is voted with the outputs for inputs 0..i); the default counts each input alone.
  """
  correct = [r for r in records if r.correct]
  counts = collections.Counter()
  answers = []
  for i in range(num_tests):
    if not carry_over:
      counts = collections.Counter()
    for record in correct:
      output = record.test_outputs[i] if i < len(record.test_outputs) else None
      if output is not None:
        counts[_key(output)] += 1
    answers.append([([list(row) for row in grid], n) for grid, n in counts.most_common(top)])
  return answers


def answered_first_test(answers: Sequence[Sequence[tuple[Grid, int]]]) -> bool:
  """BARC's ensemble rule: induction answers a task iff some correct program gave
  an output for its first test input."""
  return bool(answers) and bool(answers[0])
