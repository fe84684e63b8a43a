"""The sweep table from arm folders made by hand: scores, groups, sign tests, pending arms."""

import json
import os

from ttt_jax.eval import metrics
from ttt_jax.sweep import arm as arm_lib
from ttt_jax.sweep import spec, table

SELECTOR = 'gen:heldout@slice=0:6'
WRONG = [[0]]


def _write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(value, f)


def _make_arm(workdir, name, solutions, right, stage='predict_ttt', nll=0.5, steps=None):
  """An arm folder as run_arm leaves it, answering the tasks in `right` correctly."""
  directory = os.path.join(workdir, name)
  entry = lambda t: [
      {'attempt_1': WRONG, 'attempt_2': truth if t in right else WRONG} for truth in solutions[t]
  ]
  _write(os.path.join(directory, stage, 'submission.json'), {t: entry(t) for t in solutions})
  _write(
      os.path.join(directory, stage, 'details.json'), {t: [{'truth_nll': nll}] for t in solutions}
  )
  _write(os.path.join(directory, arm_lib.CONFIG_FILE), {'predict': {'selector': SELECTOR}})
  timings = [{'stage': 'ttt', 'wall_s': 60.0, 'compile_s': 1.0}]
  _write(os.path.join(directory, arm_lib.RESULT_FILE), {'arm': name, 'timings': timings})
  if steps is not None:
    lines = [json.dumps({'task_id': t, 'steps': steps, 'tokens': 100}) for t in solutions]
    os.makedirs(os.path.join(directory, 'ttt'), exist_ok=True)
    with open(os.path.join(directory, 'ttt', 'ttt_metrics.jsonl'), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def test_table_scores_groups_and_sign_tests(tmp_path):
  workdir = str(tmp_path)
  solutions = metrics.load_solutions(SELECTOR)
  ids = sorted(solutions)
  sweep = spec.Sweep(
      'configs/demo.py',
      (
          spec.Arm('baseline'),
          spec.Arm('better'),
          spec.Arm('base_only', stages=('predict_base',)),
          spec.Arm('pending'),
      ),
      readouts=('oracle', 'flat'),
  )
  _make_arm(workdir, 'baseline', solutions, right=ids[:1], steps=3)
  _make_arm(workdir, 'better', solutions, right=ids[:6], nll=0.25, steps=5)
  _make_arm(workdir, 'baseline', solutions, right=ids[:2], stage='readout_oracle')
  _make_arm(workdir, 'baseline', solutions, right=ids[:3], stage='readout_flat')
  _make_arm(workdir, 'base_only', solutions, right=(), stage='predict_base')
  text = table.write_table(workdir, sweep, levels={})

  with open(tmp_path / 'table.json') as f:
    data = json.load(f)
  rows = data['arms']
  assert data['pending'] == ['pending']
  assert (rows['baseline']['pass2'], rows['better']['pass2'], rows['base_only']['pass2']) == (
      1,
      6,
      0,
  )
  assert rows['better']['solved'] == 6 and rows['better']['truth_nll'] == 0.25
  assert rows['baseline']['oracle'] == 2 and rows['better']['oracle'] is None
  assert rows['baseline']['readouts'] == {'oracle': 2, 'flat': 3}
  assert rows['better']['ttt_steps'] == 30 and rows['better']['ttt_tokens'] == 600
  assert (
      rows['base_only']['prediction'] == 'predict_base' and rows['base_only']['ttt_steps'] is None
  )
  # higher on 5 of 6 tasks, lower on none: exact two-sided p = 2 / 2**5
  assert rows['better']['vs_baseline'] == {'tasks': 6, 'higher': 5, 'lower': 0, 'p': 0.0625}
  assert rows['base_only']['vs_baseline'] == {'tasks': 6, 'higher': 0, 'lower': 1, 'p': 1.0}
  assert 'vs_baseline' not in rows['baseline']
  lines = text.splitlines()
  assert lines[2] == '| baseline | 6 | 1.00 | 1 | - | 2.00 | 0.500 | 18 | 600 | 1.0 |  |'
  assert lines[3] == (
      '| better | 6 | 6.00 | 6 | - | - | 0.250 | 30 | 600 | 1.0 | +5 / -0, p = 0.0625 |'
  )
  assert '| flat | 3.00 | - | - |' in lines
  assert 'No result yet (not run, or not finished): pending.' in text
  assert os.path.getsize(tmp_path / 'table.png') > 1000
  assert (tmp_path / 'table.md').read_text() == text


def test_by_group_splits_generated_families_and_arc_levels():
  score = metrics.score_submission(
      {'gen-d8-6-100000': [{'attempt_1': WRONG, 'attempt_2': WRONG}]},
      {'gen-d8-6-100000': [WRONG], 'abc': [WRONG], 'def': [WRONG]},
  )
  assert table._by_group(score, {'abc': 'easy'}) == {'d8': 1.0, 'ARC easy': 0.0, 'ARC': 0.0}
