"""The induction half end to end (`launch.induce`): sample programs, run them in the
sandbox, vote.

Three stages, each resumable from its own file in the output directory:
  1. samples.jsonl   programs from the induction model (sample.py), in rounds
  2. records.jsonl   one ProgramRecord per sample (records.py), as each finishes: a
                     sample without a program gets a record that says so; a rerun
                     runs only the samples not yet there (a torn last line is redone)
  3. tasks/<id>.json per task: samples, programs, distinct programs, correct programs
                     and the vote's top 2 per test input with their counts (and whether
                     each is right, where the test outputs are known); submission.json
                     holds induction's own answers (a lone answer twice, none: [[0]])
launch.ensemble then combines records.jsonl with a TTT predict run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence

from absl import logging
from tqdm import tqdm

from ttt_jax import atomic_io, checkpoint
from ttt_jax.data import arc
from ttt_jax.data.arc import Task
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.eval import metrics
from ttt_jax.induction import records as records_lib
from ttt_jax.induction import sample as sample_lib
from ttt_jax.induction import sandbox, verify
from ttt_jax.induction.records import ProgramRecord
from ttt_jax.infer.vote import EMPTY_GRID
from ttt_jax.model import builtin
from ttt_jax.run_lock import RunLock

RECORDS_FILE = 'records.jsonl'
TASKS_DIR = 'tasks'
NO_PROGRAM = 'no program: the answer has no closed code block'


@dataclasses.dataclass(frozen=True)
class ExecuteConfig:
  """How sampled programs run and vote (defaults: BARC's execution and evaluation)."""

  function_name: str = 'transform'
  timeout_s: float = 2.0  # wall clock per input
  memory_mb: int = 1024
  workers: int = 0  # sandbox workers; 0: one per CPU
  bwrap: str = 'auto'  # bubblewrap around each worker: 'auto' (where it works), 'on', 'off'
  carry_over: bool = False  # BARC's vote: its counter not reset between test inputs

  def __post_init__(self):
    if self.timeout_s <= 0 or self.memory_mb <= 0 or self.workers < 0:
      raise ValueError(f'ExecuteConfig: timeout_s, memory_mb > 0 and workers >= 0, got {self}')
    if self.bwrap not in ('auto', 'on', 'off'):
      raise ValueError(f"ExecuteConfig.bwrap: {self.bwrap!r} is not 'auto', 'on' or 'off'")


@dataclasses.dataclass(frozen=True)
class InduceRun:
  """A config's `model`, `selector`, `sample` and `execute` blocks (an `ensemble` block
  beside them is launch.ensemble's)."""

  model: builtin.ModelSpec
  selector: str
  sample: sample_lib.SampleConfig
  execute: ExecuteConfig

  @classmethod
  def from_config(cls, config) -> InduceRun:
    return from_config_dict(cls, config, where='config', exclude=('ensemble',))


# ------------------------------------------------------------------ execution


def _unrecorded(samples_path: str, done: set[str]) -> Iterator[sample_lib.Sample]:
  return (s for s in sample_lib.iter_samples(samples_path) if s.name not in done)


def execute_samples(
    tasks: Sequence[Task], samples_path: str, records_path: str, config: ExecuteConfig
) -> int:
  """Appends a ProgramRecord for every sample of `tasks` not yet in `records_path`;
  returns how many it wrote. Samples stream from the file (never all in memory)."""
  by_id = {t.id: t for t in tasks}
  done = {r.get('program') for r in checkpoint.iter_log(records_path)}
  todo = sum(1 for s in _unrecorded(samples_path, done) if s.task_id in by_id)
  if not todo:
    return 0
  limits = sandbox.Limits(timeout_s=config.timeout_s, memory_mb=config.memory_mb)
  with (
      checkpoint.open_log(records_path) as out,
      sandbox.Executor(config.workers or None, bwrap=config.bwrap) as executor,
      tqdm(total=todo, desc='execute') as bar,
  ):
    logging.info('Running %d samples in the sandbox (%s)', todo, executor.isolation)

    def write(record: ProgramRecord) -> None:
      out.write(json.dumps(record.to_json()) + '\n')
      bar.update(1)

    for s in _unrecorded(samples_path, done):
      if s.task_id in by_id and not s.program:
        task = by_id[s.task_id]
        nothing = ((False,) * len(task.train), (None,) * len(task.test))
        write(ProgramRecord(s.task_id, s.name, *nothing, error=NO_PROGRAM))
    programs = (
        (s.name, s.task_id, s.program)
        for s in _unrecorded(samples_path, done)
        if s.task_id in by_id and s.program
    )
    for record in verify.verify_programs(
        by_id, programs, function_name=config.function_name, limits=limits, executor=executor
    ):
      write(record)
  return todo


# ----------------------------------------------------------------- per task


@dataclasses.dataclass
class _Tally:
  """One task's counts; of its records only the correct ones are kept (only they vote)."""

  samples: int = 0
  programs: int = 0
  distinct: int = 0
  errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  correct: list = dataclasses.field(default_factory=list)


def _error_kind(error: str) -> str:
  """'timeout', 'no program', ...: an error's reason without where it happened."""
  reason = error.split(': ', 1)[1] if error.startswith(('train ', 'test ')) else error
  return reason.split(':', 1)[0]


def tally(records_path: str, samples_path: str) -> dict[str, _Tally]:
  """Per task: samples, programs and distinct programs (samples.jsonl), what went wrong and
  the correct records (records.jsonl)."""
  tallies = collections.defaultdict(_Tally)
  for s in sample_lib.iter_samples(samples_path):
    t = tallies[s.task_id]
    t.samples += 1
    t.programs += bool(s.program)
    t.distinct += bool(s.program) and s.duplicate_of is None
  for raw in checkpoint.iter_log(records_path):
    record = ProgramRecord.from_json(raw)
    if record.error:
      tallies[record.task_id].errors[_error_kind(record.error)] += 1
    if record.correct:
      tallies[record.task_id].correct.append(record)
  return tallies


def task_summary(task: Task, t: _Tally, carry_over: bool) -> dict:
  """One task's tasks/<id>.json."""
  answers = records_lib.vote(t.correct, len(task.test), carry_over=carry_over)
  truths = [p.output.tolist() if p.output is not None else None for p in task.test]
  votes = [
      [
          {'grid': grid, 'count': n, 'right': None if truth is None else grid == truth}
          for grid, n in ranked
      ]
      for ranked, truth in zip(answers, truths)
  ]
  return {
      'task_id': task.id,
      'samples': t.samples,
      'programs': t.programs,
      'distinct_programs': t.distinct,
      'errors': dict(t.errors.most_common()),
      'correct_programs': [r.program for r in t.correct],
      'votes': votes,
  }


def submission_entries(summary: Mapping) -> list[dict]:
  """Induction's own answers for each test input (a lone answer twice, none: [[0]])."""
  entries = []
  for ranked in summary['votes']:
    grids = [v['grid'] for v in ranked] or [EMPTY_GRID]
    entries.append({'attempt_1': grids[0], 'attempt_2': grids[-1]})
  return entries


def summarize(tasks: Sequence[Task], output_dir: str, carry_over: bool) -> metrics.Score | None:
  """Writes tasks/<id>.json and submission.json; scores it where test outputs are known."""
  tallies = tally(
      os.path.join(output_dir, RECORDS_FILE), os.path.join(output_dir, sample_lib.SAMPLES_FILE)
  )
  os.makedirs(os.path.join(output_dir, TASKS_DIR), exist_ok=True)
  submission = {}
  for task in tasks:
    summary = task_summary(task, tallies.get(task.id, _Tally()), carry_over)
    atomic_io.write_json(os.path.join(output_dir, TASKS_DIR, f'{task.id}.json'), summary, indent=1)
    submission[task.id] = submission_entries(summary)
  metrics.write_submission(os.path.join(output_dir, 'submission.json'), submission)
  if any(p.output is None for t in tasks for p in t.test):
    return None
  solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
  score = metrics.score_submission(submission, solutions, metrics.known_levels())
  metrics.write_report(os.path.join(output_dir, 'report'), score)
  return score


def run_induce(run: InduceRun, output_dir: str) -> metrics.Score | None:
  """Samples, executes and votes every selected task into output_dir (each stage resumes;
  the directory is locked meanwhile)."""
  with RunLock(output_dir):
    return _run_induce(run, output_dir)


def _run_induce(run: InduceRun, output_dir: str) -> metrics.Score | None:
  sample_run = sample_lib.SampleRun(run.model, run.selector, run.sample)
  sample_lib.run_sampling(sample_run, output_dir)
  tasks = arc.load_selected(run.selector)
  execute_samples(
      tasks,
      os.path.join(output_dir, sample_lib.SAMPLES_FILE),
      os.path.join(output_dir, RECORDS_FILE),
      run.execute,
  )
  return summarize(tasks, output_dir, run.execute.carry_over)
