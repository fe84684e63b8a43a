"""A directory of program files verified into a JSON-lines log (launch.verify_programs).

A program file is named `<task id>.py` or `<task id>_<anything>.py` (e.g. BARC's
seeds, `007bbfb7.py`, or samples, `007bbfb7_17.py`); the task id is the
longest selected id the name starts with, so ids with underscores work too.
Each program's ProgramRecord is appended to the log as it finishes; a rerun
skips the programs already there (a torn last line is redone).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping

from absl import logging
from tqdm import tqdm

from ttt_jax.checkpoint import open_log, read_log
from ttt_jax.data.arc import Task
from ttt_jax.errors import UserError
from ttt_jax.induction import sandbox, verify
from ttt_jax.induction.records import ProgramRecord


def task_of(file_name: str, task_ids: Iterable[str]) -> str | None:
  """The task a program file is for: `<id>.py` or `<id>_<anything>.py`; None if none."""
  stem = file_name[: -len('.py')]
  matches = [t for t in task_ids if stem == t or stem.startswith(t + '_')]
  return max(matches, key=len, default=None)


def read_programs(
    directory: str, task_ids: Iterable[str]
) -> tuple[list[verify.Program], list[str]]:
  """(programs (file name, task id, source), files named for no selected task),
  in file-name order; only `*.py` directly in `directory`."""
  if not os.path.isdir(directory):
    raise UserError(f'--programs: {directory!r} is not a directory')
  task_ids = list(task_ids)
  programs, unmatched = [], []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if not name.endswith('.py') or not os.path.isfile(path):
      continue
    task_id = task_of(name, task_ids)
    if task_id is None:
      unmatched.append(name)
      continue
    with open(path, encoding='utf-8', errors='replace') as f:
      programs.append((name, task_id, f.read()))
  return programs, unmatched


@dataclasses.dataclass(frozen=True)
class Summary:
  """What a verification run found, over every record in the log."""

  programs: int
  correct: int  # reproduce every demonstration
  correct_on_tests: int  # ... and every known test output
  tasks: int
  tasks_with_correct: int
  tasks_solved: int  # some program correct on demonstrations and tests
  isolation: str

  def lines(self) -> list[str]:
    return [
        f'isolation: {self.isolation}',
        f'programs: {self.programs}, correct on demonstrations: {self.correct}, '
        f'also on tests: {self.correct_on_tests}',
        f'tasks: {self.tasks}, with a correct program: {self.tasks_with_correct}, '
        f'solved (tests too): {self.tasks_solved}',
    ]


def _solves(record: ProgramRecord) -> bool:
  return record.correct and bool(record.test_verdicts) and all(record.test_verdicts)


def summarize(records: Iterable[ProgramRecord], isolation: str) -> Summary:
  by_task = collections.defaultdict(list)
  for r in records:
    by_task[r.task_id].append(r)
  every = [r for rs in by_task.values() for r in rs]
  return Summary(
      programs=len(every),
      correct=sum(r.correct for r in every),
      correct_on_tests=sum(_solves(r) for r in every),
      tasks=len(by_task),
      tasks_with_correct=sum(any(r.correct for r in rs) for rs in by_task.values()),
      tasks_solved=sum(any(_solves(r) for r in rs) for rs in by_task.values()),
      isolation=isolation,
  )


def verify_dir(
    directory: str,
    tasks_by_id: Mapping[str, Task],
    out: str,
    *,
    function_name: str = 'transform',
    limits: sandbox.Limits = sandbox.Limits(),
    workers: int | None = None,
    bwrap: str = 'auto',
    transpose: bool = False,
) -> Summary:
  """Verifies the directory's programs into `out` (JSON lines), resuming; returns the
  summary over all of `out`'s records."""
  programs, unmatched = read_programs(directory, tasks_by_id)
  for name in unmatched:
    logging.error(
        '%s: skipped: its name starts with no selected task id', os.path.join(directory, name)
    )
  if not programs:
    raise UserError(f'--programs: no file in {directory!r} is named for a selected task')
  done = {r['program'] for r in read_log(out)}
  todo = [p for p in programs if p[0] not in done]
  with (
      sandbox.Executor(workers, bwrap=bwrap) as executor,
      open_log(out) as log,
      tqdm(total=len(programs), initial=len(programs) - len(todo), desc='programs') as bar,
  ):
    for record in verify.verify_programs(
        tasks_by_id,
        todo,
        function_name=function_name,
        limits=limits,
        executor=executor,
        transpose=transpose,
    ):
      log.write(json.dumps(record.to_json()) + '\n')
      log.flush()
      bar.update()
    isolation = executor.isolation
  records = [ProgramRecord.from_json(r) for r in read_log(out)]
  return summarize(records, isolation)
