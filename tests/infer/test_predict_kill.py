"""kill -9 during prediction, then resume: attempts.jsonl equals an uninterrupted run's.

The resumed run decodes the unfinished tasks in other groups than the first
run did (only the tasks left are grouped), so this also checks that a task's
candidates do not depend on its group.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ('66e6c45b', '00576224', 'be03b35f', '4cd1b7b2', 'ca8de6ea')


def _command(output_dir):
  return [
      sys.executable,
      '-m',
      'launch.predict',
      '--config=configs/predict.py:runlocal',
      f'--output_dir={output_dir}',
      '--config.selector=arc1/eval@ids=' + ','.join(TASKS),
      '--config.tasks_per_group=2',
      '--config.batch_size=4',
      '--config.max_new_tokens=48',
      '--config.decoding=sample',
      '--config.score_augmentations=2',
      '--config.prompts.d8=0,1,4',
      '--config.prompts.max_variants=3',
  ]


def _run(output_dir, timeout=300):
  proc = subprocess.run(
      _command(output_dir),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


def _records(output_dir):
  with open(os.path.join(output_dir, 'attempts.jsonl')) as f:
    return {r['task_id']: r for r in map(json.loads, f)}


def _lines(path):
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for line in f if line.endswith('\n'))


def _kill_after_first_record(kill9, output_dir, timeout=300):
  """Starts predict and SIGKILLs it as soon as one task is written (the rest of its group,
  or the next group, is being decoded). Returns the tasks written before the kill."""
  proc = subprocess.Popen(
      _command(output_dir),
      cwd=ROOT,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  path = os.path.join(output_dir, 'attempts.jsonl')
  kill9(proc, lambda: _lines(path) >= 1, timeout, 'the first record of predict')
  return _lines(path)


def _assert_close(got, want, where, atol=1e-4):
  """Equal JSON trees, floats within atol (float rounding of other batch shapes)."""
  if isinstance(want, float) or isinstance(got, float):
    assert got == pytest.approx(want, abs=atol), where
  elif isinstance(want, dict):
    assert isinstance(got, dict) and sorted(got) == sorted(want), where
    for k in want:
      _assert_close(got[k], want[k], f'{where}.{k}', atol)
  elif isinstance(want, list):
    assert isinstance(got, list) and len(got) == len(want), where
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_close(g, w, f'{where}[{i}]', atol)
  else:
    assert got == want, where


def test_killed_predict_resumes_to_the_same_attempts(tmp_path, kill9):
  full, killed = str(tmp_path / 'full'), str(tmp_path / 'killed')
  _run(full)
  written = _kill_after_first_record(kill9, killed)
  if written >= len(TASKS):
    pytest.fail('the kill came after the last task: make the run longer')
  _run(killed)
  want, got = _records(full), _records(killed)
  assert list(got) == list(want) == list(TASKS)
  for task_id in TASKS:
    # Candidates (grids, log-probs, scores), votes and the true-output NLL, all of them.
    _assert_close(got[task_id], want[task_id], task_id)
