"""configs/reproduce/paper_ablations_1b.py: every arm of the paper's 1B table builds a valid
TTT and predict run; the same arms run end to end on CPU (slow)."""

import json
import os
import subprocess
import sys

import pytest

from ttt_jax.errors import UserError
from ttt_jax.infer.predict import PredictRun
from ttt_jax.sweep import spec
from ttt_jax.train.ttt import TTTRun

SWEEP = 'configs/reproduce/paper_ablations_1b.py'
ARMS = ['no_ttt', 'baseline', 'no_transformations', 'e2e_data', 'shared_ttt', 'no_demo_loss']
ARMS += ['qlora']


@pytest.mark.parametrize('arg', ['/ckpt/ft1b', 'cpu'])
def test_every_arm_is_a_valid_run(arg):
  sweep = spec.load_sweep(f'{SWEEP}:{arg}')
  assert [a.name for a in sweep.arms] == ARMS
  runs = {}
  for arm in sweep.arms:
    config = spec.arm_config(sweep, arm)
    runs[arm.name] = TTTRun.from_config(config.ttt), PredictRun.from_config(config.predict)
  for ttt_run, predict_run in runs.values():
    assert (
        predict_run.predict.prompts.recipe == 'marc' and predict_run.predict.vote.method == 'marc'
    )
    assert (ttt_run.model.checkpoint_dir == '/ckpt/ft1b') == (arg != 'cpu')
  assert runs['baseline'][0].data.recipe == 'marc'
  assert runs['no_transformations'][0].data.no_transform
  assert runs['e2e_data'][0].data.mode == 'direct_io'
  assert runs['shared_ttt'][0].run.shared_adapter
  assert runs['qlora'][0].model.quantize == runs['qlora'][1].model.quantize == 'nf4'
  assert 'oracle' in sweep.readouts and 'single_transpose' in sweep.readouts


def test_the_checkpoint_is_required():
  with pytest.raises(UserError, match='needs an argument'):
    spec.load_sweep(SWEEP)


@pytest.mark.slow
def test_every_arm_runs_on_cpu(tmp_path):
  """The built-in model on the demo's 16 tasks, each arm TTT (2 steps) + prediction +
  the readouts; the table has every arm and readout."""
  workdir = str(tmp_path / 'ablations')
  run = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', f'--sweep={SWEEP}:cpu', f'--workdir={workdir}',
       f'--compilation_cache_dir={tmp_path / "cache"}'],
      capture_output=True, text=True, timeout=3000,
  )  # fmt: skip
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  with open(os.path.join(workdir, 'table.json')) as f:
    table = json.load(f)
  assert sorted(table['arms']) == sorted(ARMS) and not table['pending']
  for row in table['arms'].values():
    assert row['num_tasks'] == 16
    assert set(row['readouts']) == set(spec.load_sweep(f'{SWEEP}:cpu').readouts)
    assert row['readouts']['oracle'] >= max(v for k, v in row['readouts'].items())
  # the shared adapter's budget is the per-task budgets summed
  assert table['arms']['shared_ttt']['ttt_steps'] == table['arms']['baseline']['ttt_steps']
