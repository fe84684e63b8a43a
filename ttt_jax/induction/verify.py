"""Programs -> ProgramRecords: run each in the sandbox on its task's inputs, judge here.

`verify_programs(tasks_by_id, programs)` runs every `(name, task_id, source)`
on all the task's demonstration and test inputs (one execution per program,
identical sources on a task once) and yields one `ProgramRecord` per program
as it finishes. Everything is judged in this process, on the plain data the
sandbox returned: a program that patches numpy, overrides `__eq__` or writes
its own reply cannot pass a demonstration it does not solve.

A valid output is a 2-D numpy array of at most 30 x 30 whose values are
integers 0-9. Integral floats and bools count (1.0 is 1), as in BARC, which
compares with `np.array_equal`; anything else is an invalid output, its reason
in the record's `error`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ttt_jax.data.arc import MAX_SIDE, NUM_COLORS, Task
from ttt_jax.errors import UserError
from ttt_jax.induction import sandbox
from ttt_jax.induction.records import Grid, ProgramRecord

Program = tuple[str, str, str]  # (name, task id, source)


def _invalid_cell(value: Any) -> str | None:
  if type(value) is bool:
    return None
  if type(value) is float:
    if not math.isfinite(value) or not value.is_integer():
      return f'the non-integer value {value!r}'
    value = int(value)
  if type(value) is not int:
    return f'the value {value!r}'
  if not 0 <= value < NUM_COLORS:
    return f'the value {value}, outside 0-9'
  return None


def output_grid(reply: Mapping[str, Any]) -> tuple[Grid | None, str | None]:
  """A worker's reply for one input -> (grid, None) or (None, why it is no grid)."""
  if 'error' in reply:
    return None, str(reply['error'])
  value = reply.get('value') or {}
  kind = value.get('type')
  if kind != 'ndarray':
    return None, f'the output is a {kind}, not a numpy array'
  shape = value.get('shape') or []
  if len(shape) != 2:
    return None, f'the output has {len(shape)} dimensions, not 2'
  rows, cols = shape
  if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE):
    return None, f'the output is {rows}x{cols}, not within 1x1 .. {MAX_SIDE}x{MAX_SIDE}'
  cells = value.get('cells')
  if cells is None:
    return None, f"the output's dtype {value.get('dtype')} is not numeric"
  if len(cells) != rows * cols:
    return None, 'the output does not match its shape'
  for cell in cells:
    problem = _invalid_cell(cell)
    if problem:
      return None, f'the output has {problem}'
  flat = [int(c) for c in cells]
  return [flat[r * cols : (r + 1) * cols] for r in range(rows)], None


def task_inputs(task: Task, transpose: bool = False) -> list[Grid]:
  """What a program runs on: the demonstration inputs, then the test inputs."""
  return [(p.input.T if transpose else p.input).tolist() for p in task.train + task.test]


def _transposed(grid: Grid | None) -> Grid | None:
  return None if grid is None else [list(column) for column in zip(*grid)]


def judge(
    task: Task, name: str, replies: list[Mapping[str, Any]], transpose: bool = False
) -> ProgramRecord:
  """One program's replies (one per input of `task_inputs`) -> its record; with
  `transpose`, the outputs are transposed back first."""
  grids, errors = zip(*(output_grid(r) for r in replies))
  if transpose:
    grids = [_transposed(g) for g in grids]
  train = len(task.train)
  expected = [p.output for p in task.train + task.test]
  verdicts = [g is not None and y is not None and g == y.tolist() for g, y in zip(grids, expected)]
  known = all(p.output is not None for p in task.test)
  labels = [f'train {i}' for i in range(train)] + [f'test {j}' for j in range(len(task.test))]
  error = next((f'{label}: {e}' for label, e in zip(labels, errors) if e is not None), None)
  return ProgramRecord(
      task_id=task.id,
      program=name,
      train_verdicts=tuple(verdicts[:train]),
      test_outputs=tuple(grids[train:]),
      test_verdicts=tuple(verdicts[train:]) if known else None,
      error=error,
  )


def program_key(task_id: str, function_name: str, source: str) -> tuple[str, str]:
  """Programs with equal keys behave identically: they run once."""
  digest = hashlib.sha256(f'{function_name}\0{source}'.encode()).hexdigest()
  return task_id, digest


def verify_programs(
    tasks_by_id: Mapping[str, Task],
    programs: Iterable[Program],
    *,
    function_name: str = 'transform',
    limits: sandbox.Limits = sandbox.Limits(),
    workers: int | None = None,
    executor: sandbox.Executor | None = None,
    transpose: bool = False,
) -> Iterator[ProgramRecord]:
  """Runs each `(name, task_id, source)` on its task; yields its record when done.

  `transpose=True` runs programs on transposed grids and transposes their outputs
  back: BARC's seed programs index `grid[x, y]` with x the column (its validate.py
  does the same); the induction model's programs take grids as they are.

  Records come in completion order, not input order. Pass a warm `executor` to
  reuse its workers across calls; otherwise one with `workers` processes is
  started (one per CPU by default) and closed at the end. A task id not in
  `tasks_by_id` raises a UserError naming the program.
  """
  own = executor is None
  executor = executor or sandbox.Executor(workers)
  waiting: dict[tuple[str, str], list[str]] = {}  # key -> names of programs in flight
  done: dict[tuple[str, str], ProgramRecord] = {}
  copies: collections.deque[ProgramRecord] = collections.deque()

  def jobs() -> Iterator[sandbox.Job]:
    for name, task_id, source in programs:
      if task_id not in tasks_by_id:
        raise UserError(f'program {name}: task {task_id!r} is not in the selected tasks')
      key = program_key(task_id, function_name, source)
      if key in done:
        copies.append(_renamed(done[key], name))
      elif key in waiting:
        waiting[key].append(name)
      else:
        waiting[key] = [name]
        yield sandbox.Job(key, source, function_name, task_inputs(tasks_by_id[task_id], transpose))

  try:
    for job, replies in executor.run(jobs(), limits):
      names = waiting.pop(job.key)
      done[job.key] = record = judge(tasks_by_id[job.key[0]], names[0], replies, transpose)
      yield record
      for name in names[1:]:
        yield _renamed(record, name)
      while copies:
        yield copies.popleft()
    while copies:
      yield copies.popleft()
  finally:
    if own:
      executor.close()


def _renamed(record: ProgramRecord, name: str) -> ProgramRecord:
  return dataclasses.replace(record, program=name)
