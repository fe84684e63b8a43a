"""launch.induce's stages: sampled programs executed into records.jsonl (resumably), the
per-task summaries and induction's own submission; the whole run with a tiny model."""

import importlib
import json
import os

import pytest

from ttt_jax import checkpoint
from ttt_jax.data import arc
from ttt_jax.errors import UserError
from ttt_jax.induction import ensemble, induce, sample
from ttt_jax.induction.records import ProgramRecord
from ttt_jax.model.builtin import ModelSpec

# 66e6c45b: the 2x2 block in the middle of a 4x4 grid moves to the corners.
CORNERS = """def transform(input_grid):
    output_grid = input_grid * 0
    output_grid[0, 0], output_grid[0, -1] = input_grid[1, 1], input_grid[1, 2]
    output_grid[-1, 0], output_grid[-1, -1] = input_grid[2, 1], input_grid[2, 2]
    return output_grid"""
IDENTITY = 'def transform(input_grid):\n    return input_grid'
LOOP = 'def transform(input_grid):\n    while True:\n        pass'
PROGRAMS = [CORNERS, IDENTITY, None, CORNERS, LOOP, 'def transform(:']
FAST = induce.ExecuteConfig(timeout_s=0.5, workers=1, bwrap='off')


def _write_samples(path, task_id, programs, start=0):
  log = sample._Log(path)
  for i, program in enumerate(programs, start):
    log.write(sample.Sample(task_id, i, program, 10, True, -1.0))
  log.out.close()


def test_samples_become_records_summaries_and_a_submission(tmp_path):
  (task,) = arc.load_selected('arc1/eval@ids=66e6c45b')
  samples, records = str(tmp_path / sample.SAMPLES_FILE), str(tmp_path / induce.RECORDS_FILE)
  _write_samples(samples, task.id, PROGRAMS[:3])
  assert induce.execute_samples([task], samples, records, FAST) == 3
  # A kill: the last record torn mid-line, and more samples since. The rerun redoes the
  # torn one and runs the new ones only.
  lines = open(records).read().splitlines(keepends=True)
  with open(records, 'w') as f:
    f.write(''.join(lines[:2]) + lines[2][:15])
  _write_samples(samples, task.id, PROGRAMS[3:], start=3)
  assert induce.execute_samples([task], samples, records, FAST) == 4
  assert induce.execute_samples([task], samples, records, FAST) == 0

  by_name = {r.program: r for r in ensemble.read_records(records)[task.id]}
  assert sorted(by_name) == [f'{task.id}_0', f'{task.id}_3']  # the correct ones
  raw = [ProgramRecord.from_json(r) for r in checkpoint.read_log(records)]  # torn line skipped
  errors = {r.program: r.error for r in raw}
  assert len(errors) == len(PROGRAMS)
  assert errors[f'{task.id}_2'] == induce.NO_PROGRAM
  assert 'timeout' in errors[f'{task.id}_4'] and 'SyntaxError' in errors[f'{task.id}_5']

  score = induce.summarize([task], str(tmp_path), carry_over=False)
  summary = json.load(open(tmp_path / induce.TASKS_DIR / f'{task.id}.json'))
  truth = task.test[0].output.tolist()
  assert (summary['samples'], summary['programs'], summary['distinct_programs']) == (6, 5, 4)
  assert summary['correct_programs'] == [f'{task.id}_0', f'{task.id}_3']
  assert summary['votes'] == [[{'grid': truth, 'count': 2, 'right': True}]]
  assert summary['errors']['no program'] == 1 and summary['errors']['timeout'] == 1
  submission = json.load(open(tmp_path / 'submission.json'))
  assert submission == {task.id: [{'attempt_1': truth, 'attempt_2': truth}]}
  assert score.total == 1.0 and score.num_solved == 1


def test_a_task_without_a_correct_program_submits_a_placeholder(tmp_path):
  (task,) = arc.load_selected('arc1/eval@ids=66e6c45b')
  samples, records = str(tmp_path / sample.SAMPLES_FILE), str(tmp_path / induce.RECORDS_FILE)
  _write_samples(samples, task.id, [IDENTITY])
  induce.execute_samples([task], samples, records, FAST)
  score = induce.summarize([task], str(tmp_path), carry_over=False)
  assert json.load(open(tmp_path / 'submission.json'))[task.id] == [
      {'attempt_1': [[0]], 'attempt_2': [[0]]}
  ]
  assert score.total == 0.0


def test_the_whole_run_with_a_tiny_model(induction_checkpoint, tmp_path):
  """A random model's garbage answers go through every stage without an error."""
  config = sample.SampleConfig(num_samples=3, samples_per_round=3, max_new_tokens=16, batch_size=4)
  run = induce.InduceRun(
      ModelSpec(checkpoint_dir=induction_checkpoint), 'arc1/eval@ids=66e6c45b', config, FAST
  )
  score = induce.run_induce(run, str(tmp_path))
  summary = json.load(open(tmp_path / induce.TASKS_DIR / '66e6c45b.json'))
  assert summary['samples'] == 3 and sum(summary['errors'].values()) == 3
  assert len(open(tmp_path / induce.RECORDS_FILE).readlines()) == 3
  assert score.num_tasks == 1 and score.total == 0.0


def test_configs_build_runs():
  c = importlib.import_module('configs.induce').get_config()
  with pytest.raises(UserError, match=r'^--config\.model\.checkpoint_dir: '):
    induce.InduceRun.from_config(c)
  c.model.checkpoint_dir = '/ckpt'
  assert induce.InduceRun.from_config(c).execute == induce.ExecuteConfig()
  paper = importlib.import_module('configs.reproduce.barc_induction_8b').get_config('')
  paper.model.checkpoint_dir = '/ckpt'
  run = induce.InduceRun.from_config(paper)
  assert run.execute.carry_over and run.sample.num_samples == 20_000
  with pytest.raises(ValueError, match='bwrap'):
    induce.ExecuteConfig(bwrap='maybe')
