"""configs/sweeps/smoke.py end to end through launch.sweep; a kill mid-arm and a rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ttt_jax import checkpoint
from ttt_jax.sweep import arm as arm_lib

SMOKE = 'configs/sweeps/smoke.py'


def _sweep(workdir, *flags, **kwargs):
  command = [sys.executable, '-m', 'launch.sweep', f'--sweep={SMOKE}', f'--workdir={workdir}']
  cache = f'--compilation_cache_dir={os.path.join(os.path.dirname(workdir), "jax_cache")}'
  return subprocess.Popen(
      command + [cache, *flags],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
      **kwargs,
  )


def _finish(process) -> str:
  out, _ = process.communicate(timeout=900)
  assert process.returncode == 0, out[-3000:]
  return out


def _rows(workdir):
  with open(os.path.join(workdir, 'table.json')) as f:
    rows = json.load(f)['arms']
  for row in rows.values():
    del row['wall_s']  # the only number a rerun may change
  return rows


def test_smoke_sweep_runs_both_arms_then_a_rerun_skips_them(tmp_path):
  workdir = str(tmp_path / 'smoke')
  out = _finish(_sweep(workdir))
  for line in ('[baseline] ttt', '[baseline] predict with TTT', '[baseline] done in'):
    assert line in out
  rows = _rows(workdir)
  assert sorted(rows) == ['baseline', 'no_ttt']
  assert rows['baseline']['num_tasks'] == rows['no_ttt']['num_tasks'] == 2
  assert rows['baseline']['ttt_steps'] == 4 and rows['no_ttt']['ttt_steps'] is None
  assert rows['baseline']['ttt_tokens'] > 0 and rows['no_ttt']['ttt_tokens'] is None
  assert rows['baseline']['oracle'] >= rows['baseline']['pass2']  # the oracle readout ran
  assert rows['no_ttt']['vs_baseline']['tasks'] == 2
  for name in rows:
    assert os.path.exists(os.path.join(workdir, name, arm_lib.RESULT_FILE))
  again = _finish(_sweep(workdir))
  assert '[baseline] finished earlier: skipped' in again
  assert '[no_ttt] finished earlier: skipped' in again
  assert _rows(workdir) == rows


@pytest.mark.slow
def test_killed_mid_arm_and_rerun_gives_the_same_table(tmp_path):
  whole = str(tmp_path / 'whole')
  _finish(_sweep(whole))
  killed = str(tmp_path / 'killed')
  process = _sweep(killed, start_new_session=True)
  progress = os.path.join(killed, 'baseline', arm_lib.PROGRESS_FILE)
  deadline = time.time() + 600
  while 'predict with TTT' not in [e['stage'] for e in checkpoint.read_log(progress)]:
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.2)
  time.sleep(3)  # well inside the prediction
  os.killpg(process.pid, signal.SIGKILL)  # the executor and its worker, as a crash would
  process.wait()
  assert arm_lib.result_of(killed, arm_lib.spec.Arm('baseline')) is None
  _finish(_sweep(killed))
  assert _rows(killed) == _rows(whole)
