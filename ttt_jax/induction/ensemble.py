"""Induction and TTT transduction together (BARC evaluation.py's rule), and the report.

Per task: if some correct program gave an output for the first test input, induction
answers every test input of the task with its vote's top 2; otherwise the TTT predict
run's submission answers it. Sides never mix inside a task, but for two gaps in
induction's answers:
- a test input with one induction answer gets as attempt 2 `second_attempt`:
  'transduction' (TTT's first attempt for it, or its second if the first is the same
  grid) or 'repeat' (the same grid again: BARC submitted one answer there, and scores
  equal BARC's);
- a test input with none (possible only without `carry_over`) takes TTT's attempts.

The report scores induction alone, TTT alone, the ensemble and the oracle (per task
the better side: fractional credit the larger score, all-or-nothing solved by either
side) with eval/metrics.py, both ways: fractional credit per test input (the paper's
61.9%) and all-or-nothing per task.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

from absl import logging

from ttt_jax import atomic_io, checkpoint
from ttt_jax.data import arc
from ttt_jax.data.arc import Task
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.errors import UserError, blame
from ttt_jax.eval import metrics
from ttt_jax.induction import records as records_lib
from ttt_jax.induction import released as released_lib
from ttt_jax.induction.records import ProgramRecord
from ttt_jax.run_lock import RunLock

SECOND_ATTEMPTS = ('transduction', 'repeat')
SIDES = ('induction', 'transduction', 'ensemble')


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
  # True: BARC's vote, whose counter is not reset between a task's test inputs.
  carry_over: bool = False
  second_attempt: str = 'transduction'  # one of SECOND_ATTEMPTS

  def __post_init__(self):
    if self.second_attempt not in SECOND_ATTEMPTS:
      raise ValueError(
          f'EnsembleConfig.second_attempt {self.second_attempt!r} is not one of {SECOND_ATTEMPTS}'
      )


@dataclasses.dataclass(frozen=True)
class Choice:
  """Which side answers a task, from how many correct programs, and induction's vote
  counts per test input (attempt 1, attempt 2; empty where it had no answer)."""

  task_id: str
  side: str  # 'induction' or 'transduction'
  num_correct: int
  votes: tuple[tuple[int, ...], ...]


def _second(first, ttt_entry: Mapping, mode: str):
  if mode == 'transduction':
    for key in metrics.ATTEMPT_KEYS:
      if ttt_entry[key] != first:
        return ttt_entry[key]
  return first


def task_entries(answers, ttt_entries: Sequence[Mapping], config: EnsembleConfig) -> list[dict]:
  """The ensemble's entries of a task that induction answers."""
  entries = []
  for ranked, ttt_entry in zip(answers, ttt_entries):
    grids = [grid for grid, _ in ranked]
    if not grids:
      entries.append(dict(ttt_entry))
    else:
      second = grids[1] if len(grids) > 1 else _second(grids[0], ttt_entry, config.second_attempt)
      entries.append({'attempt_1': grids[0], 'attempt_2': second})
  return entries


def _induction_alone(answers) -> list[dict]:
  """Induction's own entries: its top 2 (one answer: twice; none: no attempts)."""
  return [
      {'attempt_1': ranked[0][0], 'attempt_2': ranked[-1][0]} if ranked else {}
      for ranked in answers
  ]


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """The ensemble's submission and choices, and induction's own submission (the tasks it
  answers only), each {task_id: entries}."""

  submission: dict[str, list[dict]]
  choices: dict[str, Choice]
  induction: dict[str, list[dict]]


def ensemble(
    tasks: Sequence[Task],
    records: Mapping[str, Sequence[ProgramRecord]],
    ttt: Mapping[str, Sequence[Mapping]],
    config: EnsembleConfig,
) -> Ensemble:
  """Every task's answer from induction's `records` ({task_id: records}; a task without
  any has no correct program) or the TTT submission `ttt`, which must cover every task."""
  submission, choices, induction = {}, {}, {}
  for task in tasks:
    mine = records.get(task.id, ())
    answers = records_lib.vote(mine, len(task.test), carry_over=config.carry_over)
    answered = records_lib.answered_first_test(answers)
    if answered:
      submission[task.id] = task_entries(answers, ttt[task.id], config)
      induction[task.id] = _induction_alone(answers)
    else:
      submission[task.id] = [dict(e) for e in ttt[task.id]]
    choices[task.id] = Choice(
        task.id,
        'induction' if answered else 'transduction',
        sum(r.correct for r in mine),
        tuple(tuple(n for _, n in ranked) for ranked in answers),
    )
  return Ensemble(submission, choices, induction)


# ----------------------------------------------------------------------- report


def _totals(total: float, num_solved: int, num_tasks: int) -> dict:
  return {
      'total': total,
      'mean': total / num_tasks if num_tasks else 0.0,
      'num_solved': num_solved,
      'num_tasks': num_tasks,
  }


def report(
    result: Ensemble, ttt: Mapping[str, Sequence], solutions: Mapping[str, Sequence]
) -> dict:
  """Per task which side answered and what each side scores; the totals of induction
  alone, TTT alone, the ensemble and the oracle, as fractional credit (`total`, `mean`)
  and all-or-nothing (`num_solved`)."""
  submissions = {'induction': result.induction, 'transduction': ttt, 'ensemble': result.submission}
  scores = {side: metrics.score_submission(s, solutions) for side, s in submissions.items()}
  by_task = {side: {t.task_id: t for t in s.tasks} for side, s in scores.items()}
  tasks = []
  for task_id in sorted(solutions):
    choice = result.choices[task_id]
    ind, tra = by_task['induction'][task_id], by_task['transduction'][task_id]
    tasks.append(
        {
            'task_id': task_id,
            'side': choice.side,
            'correct_programs': choice.num_correct,
            'votes': [list(v) for v in choice.votes],
            **{side: by_task[side][task_id].score for side in SIDES},
            'oracle': max(ind.score, tra.score),
            'oracle_solved': ind.solved or tra.solved,
        }
    )
  totals = {side: _totals(s.total, s.num_solved, s.num_tasks) for side, s in scores.items()}
  totals['oracle'] = _totals(
      math.fsum(t['oracle'] for t in tasks), sum(t['oracle_solved'] for t in tasks), len(tasks)
  )
  sides = collections.Counter(t['side'] for t in tasks)
  return {'totals': totals, 'answered_by': dict(sides), 'tasks': tasks}


def report_markdown(data: dict) -> str:
  lines = [
      '| task | answered by | correct programs | induction votes | induction | TTT | ensemble |',
      '|---|---|---|---|---|---|---|',
  ]
  for t in data['tasks']:
    votes = ', '.join('/'.join(map(str, v)) for v in t['votes'] if v)
    lines.append(
        f"| {t['task_id']} | {t['side']} | {t['correct_programs']} | {votes} "
        f"| {t['induction']:.2f} | {t['transduction']:.2f} | {t['ensemble']:.2f} |"
    )
  lines += [
      '',
      f"Answered by induction: {data['answered_by'].get('induction', 0)} tasks, by TTT: "
      f"{data['answered_by'].get('transduction', 0)}.",
      '',
      '| | pass@2, fractional credit per test input | all-or-nothing per task |',
      '|---|---|---|',
  ]
  names = {'induction': 'induction alone', 'transduction': 'TTT alone', 'ensemble': '**ensemble**'}
  names['oracle'] = 'oracle (the better side per task)'
  for side, name in names.items():
    s = data['totals'][side]
    lines.append(
        f"| {name} | {s['total']:.2f} / {s['num_tasks']} ({100 * s['mean']:.2f}%) "
        f"| {s['num_solved']} / {s['num_tasks']} |"
    )
  return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------ a run


@dataclasses.dataclass(frozen=True)
class EnsembleRun:
  """What launch.ensemble combines: the selected tasks, a TTT predict run, and induction's
  records (ours, JSON lines) or BARC's released results (a directory or an hf: id)."""

  selector: str = 'arc1/eval'
  ttt: str = ''  # a predict run's output_dir, or its submission.json
  induction: str = ''  # ProgramRecords, one JSON line each
  released: str = ''  # e.g. released.RELEASED
  released_folders: tuple[str, ...] = released_lib.FOLDERS
  released_samples: int = released_lib.SAMPLES_PER_FOLDER  # per folder and task
  ensemble: EnsembleConfig = EnsembleConfig()

  @classmethod
  def from_config(cls, config) -> EnsembleRun:
    run = from_config_dict(cls, config, where='config')
    if not run.ttt:
      raise UserError('--config.ttt: give the TTT predict run (its output_dir or submission.json)')
    if bool(run.induction) == bool(run.released):
      raise UserError(
          "--config.induction: give induction records, or --config.released: BARC's released "
          'results; one of the two'
      )
    return run


def read_records(path: str) -> dict[str, list[ProgramRecord]]:
  """{task_id: its correct records} of a JSON-lines file of ProgramRecords (only correct
  programs vote; a 20k-sample run's others would only fill memory); a record missing a
  field is skipped with a warning."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file')
  records = collections.defaultdict(list)
  for n, raw in enumerate(checkpoint.iter_log(path), 1):
    try:
      record = ProgramRecord.from_json(raw)
    except (KeyError, TypeError) as e:
      logging.warning('%s: record %d skipped: field %s missing or malformed', path, n, e)
      continue
    if record.correct:
      records[record.task_id].append(record)
  return dict(records)


def read_ttt(path: str, tasks: Sequence[Task]) -> dict[str, list[dict]]:
  """A predict run's submission, checked to answer every test input of every task."""
  if os.path.isdir(path):
    path = os.path.join(path, 'submission.json')
  submission = metrics.read_submission(path)
  missing = [t.id for t in tasks if t.id not in submission]
  if missing:
    raise ValueError(f'{path} has no prediction of tasks {missing[:5]}: predict them first')
  for t in tasks:
    if len(submission[t.id]) != len(t.test):
      raise ValueError(
          f'{path}: task {t.id} has {len(submission[t.id])} entries for {len(t.test)} test inputs'
      )
  return submission


def run_ensemble(run: EnsembleRun, output_dir: str) -> dict | None:
  """Writes output_dir/submission.json and choices.json and, when the test outputs are
  known, report.json and report.md; returns the report (None without outputs). The
  directory is locked meanwhile."""
  with RunLock(output_dir):
    return _run_ensemble(run, output_dir)


def _run_ensemble(run: EnsembleRun, output_dir: str) -> dict | None:
  tasks = arc.load_selected(run.selector)
  with blame('config.ttt'):
    ttt = read_ttt(run.ttt, tasks)
  if run.induction:
    with blame('config.induction'):
      records = read_records(run.induction)
  else:
    with blame('config.released'):
      records = released_lib.read_released(
          run.released, tasks, run.released_folders, run.released_samples
      )
  result = ensemble(tasks, records, ttt, run.ensemble)
  metrics.write_submission(os.path.join(output_dir, 'submission.json'), result.submission)
  choices = {t: dataclasses.asdict(c) for t, c in result.choices.items()}
  atomic_io.write_json(os.path.join(output_dir, 'choices.json'), choices, indent=1)
  if any(p.output is None for t in tasks for p in t.test):
    logging.info('Test outputs unknown: wrote the submission, no score.')
    return None
  solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
  data = report(result, ttt, solutions)
  atomic_io.write_json(os.path.join(output_dir, 'report.json'), data, indent=1)
  atomic_io.write_text(os.path.join(output_dir, 'report.md'), report_markdown(data))
  return data
