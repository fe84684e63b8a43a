"""pass@2 scoring exactly as the ARC Prize scores it, submission I/O, reports.

The ARC Prize rule: a task's score is the fraction of its test inputs for which
`attempt_1` or `attempt_2` equals the true output (same shape, same values).
The total is the sum of task scores; we also report the mean over tasks and the
number of tasks with every test input right. Both are printed everywhere
(`summary`): the paper's 400-task numbers give each test input its fraction,
its 80-task numbers count whole tasks (the reference's arclib/eval.py,
`subpoints` on and off). Tasks with a level in configs/data/*levels.csv (the
paper's easy / medium / hard / expert) get per-level totals.

submission.json (Kaggle format), one dict per test input, in order:

    {"task_id": [{"attempt_1": grid, "attempt_2": grid}, ...], ...}

Two entry points treat bad input differently, on purpose:
- `read_submission` / `validate_submission` / `write_submission` are strict:
  a malformed file raises `SubmissionError` naming the task, the test input and
  the field, so a broken predictor is noticed before anything is scored.
- `score_submission` never crashes on a dict of tasks: a missing task, a
  missing test input, a missing attempt or a malformed grid scores 0 for that
  test input and is listed in the task's `problems`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ttt_jax import atomic_io
from ttt_jax.data import arc

Grid = list[list[int]]
Submission = dict[str, list[dict[str, Grid]]]
Solutions = dict[str, list[Grid]]
# Optional voting details from the predictor, per task, one dict per test input:
#   {"votes": [votes_1, votes_2], "found_by": [[group names], [group names]],
#    "truth_nll": mean NLL per token of the true output (when known)}
# or, for a task that could not be predicted (its adapter was damaged), {"failed": why}.
# (`ttt_jax.infer.vote.to_details` and `ttt_jax.infer.predict` write them).
Details = Mapping[str, Sequence[Mapping[str, Any]]]

ATTEMPT_KEYS = ('attempt_1', 'attempt_2')
LEVELS = ('easy', 'medium', 'hard', 'expert')  # the order level tables use
# task_id,level files read by every report (the repository's configs/data).
LEVEL_FILES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'configs',
    'data',
    '*levels.csv',
)


class SubmissionError(ValueError):
  """A submission or solutions file that does not follow the Kaggle format."""


# ------------------------------------------------------------------- grids


def _check_grid(grid: Any, where: str) -> Grid:
  problem = arc.grid_problem(grid)
  if problem:
    raise SubmissionError(f'{where}: grid {problem}')
  return grid


def _check_dict(obj: Any, what: str) -> None:
  if not isinstance(obj, Mapping):
    raise SubmissionError(f'{what}: expected a dict keyed by task id, got {type(obj).__name__}')


# ----------------------------------------------------------------- files


def validate_submission(submission: Any) -> Submission:
  """Returns `submission` unchanged, or raises naming task, test and field."""
  _check_dict(submission, 'submission')
  for task_id, entries in submission.items():
    if not isinstance(entries, list) or not entries:
      raise SubmissionError(f'task {task_id}: expected a non-empty list of test inputs')
    for i, entry in enumerate(entries):
      if not isinstance(entry, dict):
        raise SubmissionError(f'task {task_id} test {i}: expected a dict of attempts')
      for key in ATTEMPT_KEYS:
        if key not in entry:
          raise SubmissionError(f'task {task_id} test {i}: missing {key}')
        _check_grid(entry[key], f'task {task_id} test {i} {key}')
      extra = sorted(set(entry) - set(ATTEMPT_KEYS))
      if extra:
        raise SubmissionError(f'task {task_id} test {i}: unexpected fields {extra}')
  return submission


def validate_solutions(solutions: Any) -> Solutions:
  """Solutions as Kaggle ships them: {task_id: [output grid per test input]}."""
  _check_dict(solutions, 'solutions')
  for task_id, grids in solutions.items():
    if not isinstance(grids, list) or not grids:
      raise SubmissionError(f'solutions task {task_id}: expected a non-empty list of grids')
    for i, grid in enumerate(grids):
      _check_grid(grid, f'solutions task {task_id} test {i}')
  return solutions


def _read_json(path: str | os.PathLike) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise SubmissionError(f'{path}: not valid JSON ({e})') from None


def read_submission(path: str | os.PathLike) -> Submission:
  data = _read_json(path)
  try:
    return validate_submission(data)
  except SubmissionError as e:
    raise SubmissionError(f'{path}: {e}') from None


def write_submission(path: str | os.PathLike, submission: Submission) -> None:
  """Validates and writes `submission` atomically (a reader never sees half of it)."""
  validate_submission(submission)
  atomic_io.write_json(path, submission)


def read_solutions(path: str | os.PathLike) -> Solutions:
  data = _read_json(path)
  try:
    return validate_solutions(data)
  except SubmissionError as e:
    raise SubmissionError(f'{path}: {e}') from None


def load_solutions(selector_or_path: str) -> Solutions:
  """A Kaggle solutions.json path, or a `ttt_jax.data.arc.load_tasks` selector."""
  if selector_or_path.endswith('.json') and os.path.isfile(selector_or_path):
    return read_solutions(selector_or_path)
  from ttt_jax.data import arc  # Only when scoring against loaded tasks.

  tasks, _ = arc.load_tasks(selector_or_path)
  if not tasks:
    raise ValueError(f'{selector_or_path}: no tasks loaded')
  unsolved = [t.id for t in tasks if any(p.output is None for p in t.test)]
  if unsolved:
    raise ValueError(f'{selector_or_path}: tasks without test outputs: {unsolved[:10]}')
  return {t.id: [p.output.tolist() for p in t.test] for t in tasks}


def read_levels(path: str | os.PathLike) -> dict[str, str]:
  """A `task_id,level` CSV (header required) -> {task_id: level}."""
  levels = {}
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    if not {'task_id', 'level'} <= set(reader.fieldnames or ()):
      raise ValueError(f'{path}: expected a header with task_id,level, ' f'got {reader.fieldnames}')
    for line, row in enumerate(reader, start=2):
      task_id, level = (row['task_id'] or '').strip(), (row['level'] or '').strip()
      if not task_id or not level:
        raise ValueError(f'{path} line {line}: empty task_id or level')
      if task_id in levels:
        raise ValueError(f'{path} line {line}: task {task_id} listed twice')
      levels[task_id] = level
  return levels


def known_levels(pattern: str = LEVEL_FILES) -> dict[str, str]:
  """{task_id: level} of every file `pattern` matches ({} if none: an installed package
  without the repository's configs)."""
  levels = {}
  for path in sorted(glob.glob(pattern)):
    for task_id, level in read_levels(path).items():
      if levels.setdefault(task_id, level) != level:
        raise ValueError(
            f'{path}: task {task_id} is {level!r}, another file says {levels[task_id]!r}'
        )
  return levels


# --------------------------------------------------------------- scoring


@dataclasses.dataclass(frozen=True)
class TaskResult:
  """One task's pass@2 outcome.

  `solved_by[i]` is 1 or 2 (the first attempt equal to test output i), or None.
  """

  task_id: str
  level: str | None
  solved_by: tuple[int | None, ...]
  problems: tuple[str, ...] = ()

  @property
  def num_tests(self) -> int:
    return len(self.solved_by)

  @property
  def num_correct(self) -> int:
    return sum(s is not None for s in self.solved_by)

  @property
  def score(self) -> float:
    return self.num_correct / self.num_tests

  @property
  def solved(self) -> bool:
    return self.num_correct == self.num_tests


@dataclasses.dataclass(frozen=True)
class Score:
  tasks: tuple[TaskResult, ...]
  # Submitted task ids that the solutions do not have: not scored.
  unknown_tasks: tuple[str, ...] = ()

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  @property
  def total(self) -> float:
    return math.fsum(t.score for t in self.tasks)  # fsum: halves add up exactly

  @property
  def mean(self) -> float:
    return self.total / self.num_tasks if self.num_tasks else 0.0

  @property
  def num_solved(self) -> int:
    """Tasks with every test input right."""
    return sum(t.solved for t in self.tasks)

  @property
  def by_level(self) -> dict[str, Score]:
    """The same totals per level, for tasks that have one (LEVELS order, others after)."""
    grouped = collections.defaultdict(list)
    for t in self.tasks:
      if t.level is not None:
        grouped[t.level].append(t)
    order = lambda level: (LEVELS.index(level) if level in LEVELS else len(LEVELS), level)
    return {level: Score(tuple(grouped[level])) for level in sorted(grouped, key=order)}


def summary(score: Score) -> str:
  """Both ways of scoring, in one line: pass@2 with each test input its fraction of a task
  (the ARC Prize's and the paper's 400-task unit) and whole tasks (its 80-task unit)."""
  n = score.num_tasks
  solved_pct = 100 * score.num_solved / n if n else 0.0
  return (
      f'pass@2 {score.total:.2f} / {n} tasks ({100 * score.mean:.1f}%) by test input; '
      f'{score.num_solved} / {n} ({solved_pct:.1f}%) with every test input right'
  )


def score_task(
    task_id: str, entries: Any, truths: Sequence[Grid], level: str | None = None
) -> TaskResult:
  """Scores one task's submitted entries against its true test outputs."""
  if entries is None:
    return TaskResult(task_id, level, (None,) * len(truths), ('missing from submission',))
  if not isinstance(entries, list):
    problem = f'expected a list of test inputs, got {type(entries).__name__}'
    return TaskResult(task_id, level, (None,) * len(truths), (problem,))
  problems = []
  if len(entries) != len(truths):
    problems.append(f'{len(entries)} test entries for {len(truths)} test inputs')
  solved_by = []
  for i, truth in enumerate(truths):
    entry = entries[i] if i < len(entries) else None
    if not isinstance(entry, dict):
      problems.append(f'test {i}: no dict of attempts')
      solved_by.append(None)
      continue
    winner = None
    for k, key in enumerate(ATTEMPT_KEYS, start=1):
      attempt = entry.get(key)
      problem = 'missing' if attempt is None else arc.grid_problem(attempt)
      if problem:
        problems.append(f'test {i} {key}: {problem}')
      elif winner is None and attempt == truth:
        winner = k
    solved_by.append(winner)
  return TaskResult(task_id, level, tuple(solved_by), tuple(problems))


def score_submission(
    submission: Mapping[str, Any],
    solutions: Mapping[str, Sequence[Grid]],
    levels: Mapping[str, str] | None = None,
) -> Score:
  """pass@2 of `submission` over every task in `solutions` (sorted by id)."""
  _check_dict(submission, 'submission')
  levels = levels or {}
  tasks = tuple(
      score_task(task_id, submission.get(task_id), solutions[task_id], levels.get(task_id))
      for task_id in sorted(solutions)
  )
  return Score(tasks, tuple(sorted(set(submission) - set(solutions))))


# --------------------------------------------------------------- reports


def _found_by(result: TaskResult, details: Details) -> list[str]:
  """Groups (transforms) whose candidates equal a correct attempt, where known."""
  info = details.get(result.task_id, ())
  names = set()
  for i, attempt in enumerate(result.solved_by):
    if attempt is not None and i < len(info) and 'found_by' in info[i]:
      names.update(info[i]['found_by'][attempt - 1])
  return sorted(names)


def _votes(result: TaskResult, details: Details) -> list[list[int]] | None:
  info = details.get(result.task_id)
  if not info or not all('votes' in d for d in info):
    return None
  return [list(d['votes']) for d in info]


def truth_nll(task_id: str, details: Details) -> float | None:
  """The task's mean `truth_nll` over its test inputs (see infer/predict.py), if recorded."""
  values = [d['truth_nll'] for d in details.get(task_id, ()) if d.get('truth_nll') is not None]
  return sum(values) / len(values) if values else None


def failure(task_id: str, details: Details) -> str | None:
  """Why the task could not be predicted (its details say "failed"), or None."""
  return next((d['failed'] for d in details.get(task_id, ()) if d.get('failed')), None)


def valid_candidates(details: Details) -> tuple[int, int]:
  """(well-formed grids, candidates) decoded over all tasks' test inputs, where recorded."""
  entries = [d for info in details.values() for d in info if 'num_candidates' in d]
  return sum(d['num_valid'] for d in entries), sum(d['num_candidates'] for d in entries)


def _totals(score: Score) -> dict[str, Any]:
  return {
      'num_tasks': score.num_tasks,
      'total': score.total,
      'mean': score.mean,
      'num_solved': score.num_solved,
  }


def report(score: Score, details: Details | None = None) -> dict[str, Any]:
  """The whole evaluation as a JSON-serialisable dict."""
  details = details or {}
  return {
      **_totals(score),
      'by_level': {level: _totals(s) for level, s in score.by_level.items()},
      'unknown_tasks': list(score.unknown_tasks),
      'failed_tasks': {
          t.task_id: failure(t.task_id, details) for t in score.tasks if failure(t.task_id, details)
      },
      'tasks': [
          {
              'task_id': t.task_id,
              'level': t.level,
              'num_tests': t.num_tests,
              'num_correct': t.num_correct,
              'score': t.score,
              'solved_by': list(t.solved_by),
              'votes': _votes(t, details),
              'found_by': _found_by(t, details),
              'truth_nll': truth_nll(t.task_id, details),
              'failed': failure(t.task_id, details),
              'problems': list(t.problems),
          }
          for t in score.tasks
      ],
  }


def report_markdown(score: Score, details: Details | None = None) -> str:
  """A per-task table, the totals and a per-level table, in Markdown."""
  data = report(score, details)
  lines = [
      '| task | level | tests | correct | score | votes (attempt 1/2) | found by '
      '| true-output NLL/token | problems |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for t in data['tasks']:
    votes = ', '.join(f'{a}/{b}' for a, b in t['votes']) if t['votes'] else ''
    nll = '' if t['truth_nll'] is None else f"{t['truth_nll']:.3f}"
    problems = ([f"FAILED: {t['failed']}"] if t['failed'] else []) + t['problems']
    lines.append(
        f"| {t['task_id']} | {t['level'] or ''} | {t['num_tests']} "
        f"| {t['num_correct']} | {t['score']:.2f} | {votes} "
        f"| {', '.join(t['found_by'])} | {nll} | {'; '.join(problems)} |"
    )
  lines += ['', f'**{summary(score)}.**']
  if data['by_level']:
    lines += [
        '',
        '| level | tasks | pass@2 by test input | mean | tasks fully solved |',
        '|---|---|---|---|---|',
    ]
    for level, s in data['by_level'].items():
      lines.append(
          f"| {level} | {s['num_tasks']} | {s['total']:.2f} "
          f"| {100 * s['mean']:.1f}% | {s['num_solved']} |"
      )
  if data['failed_tasks']:
    lines += [
        '',
        f"**Failed, not predicted (each scores 0): {len(data['failed_tasks'])} task(s): "
        f"{', '.join(data['failed_tasks'])}.**",
    ]
  if data['unknown_tasks']:
    lines += ['', f"Not in the solutions, not scored: {', '.join(data['unknown_tasks'])}"]
  return '\n'.join(lines) + '\n'


def write_report(
    report_dir: str | os.PathLike, score: Score, details: Details | None = None
) -> tuple[str, str]:
  """Writes report.json and report.md under `report_dir`; returns both paths."""
  os.makedirs(report_dir, exist_ok=True)
  json_path = os.path.join(report_dir, 'report.json')
  md_path = os.path.join(report_dir, 'report.md')
  atomic_io.write_json(json_path, report(score, details), indent=1)
  atomic_io.write_text(md_path, report_markdown(score, details))
  return json_path, md_path


def evaluate(
    submission_path: str,
    solutions: str,
    report_dir: str,
    levels_path: str | None = None,
    details_path: str | None = None,
) -> Score:
  """Scores a submission file and writes the reports (what launch/evaluate runs).

  The submission is scored leniently (see the module docstring): a broken
  entry costs its test input, it does not stop the evaluation. Levels come
  from `levels_path`, else from configs/data (`known_levels`).
  """
  submission = _read_json(submission_path)
  _check_dict(submission, str(submission_path))
  levels = read_levels(levels_path) if levels_path else known_levels()
  details = _read_json(details_path) if details_path else None
  score = score_submission(submission, load_solutions(solutions), levels)
  write_report(report_dir, score, details)
  return score
