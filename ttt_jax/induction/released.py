"""BARC's released induction results as ProgramRecords: the ensemble without running the
8B induction model.

BARC's README links them as the Hugging Face repo
barc0/induction_samples_with_execution_results (`hf:barc0/...`, a model-type repo by
that link). Each sampling setup is a folder of JSON-lines files (ARC-Potpourri/,
ARC-Potpourri-AugmentedPrompt/); a row holds one task's samples from one file:
`uid`, `train_verdicts` (one bool per sample: it reproduced every demonstration) and
`output_grids` (per sample, its outputs for every demonstration input, then for every
test input). BARC's evaluation.py reads a folder's files in sorted order, joins a task's
samples across them, keeps the first 20000 per folder and pools the folders: so does
`read_released`.

A record stands for one sample; its one verdict is repeated per demonstration (the
rows carry no more). A test output that is not a valid grid is None with its reason
in `error` (evaluation.py would count such a value as an answer of its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from absl import logging

from ttt_jax import hub
from ttt_jax.data import arc
from ttt_jax.data.arc import Task
from ttt_jax.induction.records import Grid, ProgramRecord

RELEASED = 'hf:barc0/induction_samples_with_execution_results'
FOLDERS = ('ARC-Potpourri', 'ARC-Potpourri-AugmentedPrompt')
SAMPLES_PER_FOLDER = 20_000


def _rows(folder: str) -> Iterator[tuple[str, int, dict]]:
  """(file, line number, row) of a folder's JSON-lines files, files in sorted order."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder}: no such folder of released results')
  names = sorted(n for n in os.listdir(folder) if n.endswith('.jsonl'))
  if not names:
    raise FileNotFoundError(f'{folder}: no .jsonl files')
  for name in names:
    path = os.path.join(folder, name)
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if line.strip():
          try:
            yield path, number, json.loads(line)
          except json.JSONDecodeError as e:
            logging.warning('%s:%d: row skipped: not JSON (%s)', path, number, e)


def _row_problem(row: dict) -> str | None:
  """Why a row is unreadable (naming the field), or None."""
  verdicts, grids = row.get('train_verdicts'), row.get('output_grids')
  if not isinstance(row.get('uid'), str):
    return 'field uid is missing or not a string'
  if not isinstance(verdicts, list) or not isinstance(grids, list):
    return 'fields train_verdicts and output_grids must be lists'
  if len(verdicts) != len(grids):
    return f'{len(verdicts)} train_verdicts for {len(grids)} output_grids'
  return None


class _Grids:
  """Equal grids shared as one object: many correct samples give the same outputs."""

  def __init__(self):
    self.seen: dict[tuple, Grid] = {}

  def valid(self, value) -> tuple[Grid | None, str | None]:
    """(the grid, None) or (None, why it is not one)."""
    problem = arc.grid_problem(value)
    if problem:
      return None, problem
    key = tuple(tuple(row) for row in value)
    return self.seen.setdefault(key, value), None


def _truths(task: Task) -> list[Grid] | None:
  """The task's test outputs as lists, where all are known."""
  if any(p.output is None for p in task.test):
    return None
  return [p.output.tolist() for p in task.test]


def _record(
    task: Task, truths: list[Grid] | None, name: str, verdict: bool, outputs, grids: _Grids
) -> ProgramRecord:
  num_train, errors, test_outputs = len(task.train), [], []
  outputs = outputs if isinstance(outputs, list) else []
  for i in range(num_train, num_train + len(task.test)):
    grid, problem = grids.valid(outputs[i]) if i < len(outputs) else (None, 'missing')
    test_outputs.append(grid)
    if problem:
      errors.append(f'test output {i - num_train}: {problem}')
  test_verdicts = None
  if truths is not None:
    test_verdicts = tuple(g is not None and g == t for g, t in zip(test_outputs, truths))
  return ProgramRecord(
      task_id=task.id,
      program=name,
      train_verdicts=(bool(verdict),) * num_train,
      test_outputs=tuple(test_outputs),
      test_verdicts=test_verdicts,
      error='; '.join(errors) or None,
  )


def read_released(
    root: str,
    tasks: Sequence[Task],
    folders: Sequence[str] = FOLDERS,
    samples_per_folder: int = SAMPLES_PER_FOLDER,
    correct_only: bool = True,
) -> dict[str, list[ProgramRecord]]:
  """{task_id: records} of the selected tasks from the released folders under `root` (a
  directory or an `hf:` id), the first `samples_per_folder` samples of a task per folder,
  in evaluation.py's order; only the correct ones unless `correct_only=False` (only those
  vote). A record's `program` is `<folder>/<sample index in that folder>`. Rows of other
  tasks are skipped; an unreadable row is skipped with a warning naming file and line."""
  root = hub.local_path(root, tuple(f'{f}/*.jsonl' for f in folders))
  by_id, truths = {t.id: t for t in tasks}, {t.id: _truths(t) for t in tasks}
  records: dict[str, list[ProgramRecord]] = {t.id: [] for t in tasks}
  grids, unknown = _Grids(), set()
  for folder in folders:
    taken: dict[str, int] = {}
    for path, number, row in _rows(os.path.join(root, folder)):
      problem = _row_problem(row)
      if problem:
        logging.warning('%s:%d: row skipped: %s', path, number, problem)
        continue
      task = by_id.get(row['uid'])
      if task is None:
        unknown.add(row['uid'])
        continue
      for verdict, outputs in zip(row['train_verdicts'], row['output_grids']):
        index = taken.get(task.id, 0)
        if index >= samples_per_folder:
          break
        taken[task.id] = index + 1
        if verdict or not correct_only:
          name = f'{folder}/{index}'
          records[task.id].append(_record(task, truths[task.id], name, verdict, outputs, grids))
    short = sorted(t for t in by_id if taken.get(t, 0) < samples_per_folder)
    if short:
      logging.warning(
          '%s: %d selected tasks have fewer than %d samples (e.g. %s)',
          folder,
          len(short),
          samples_per_folder,
          ', '.join(short[:5]),
      )
  if unknown:
    logging.info('Released results of %d tasks not selected: skipped.', len(unknown))
  return records
