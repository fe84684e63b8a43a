"""kill -9 in the middle of an orbax save of a TTT run, then a rerun: the same adapters as
an uninterrupted run (slow: two runs and a process start; the default suite has the fast
variant, a save's half-written tmp directory, in test_stream.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ttt_kill_worker as worker
import ttt_testlib as tl
from ttt_jax import checkpoint, run_lock
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import ttt

KILL_STEP = 5  # job 1 is training; job 0 finished at step 3 and was exported


def _adapters(workdir):
  return {
      name: checkpoint.load_peft_adapter(
          os.path.join(workdir, 'adapters', name), ModelConfig.preset('tiny')
      )[0]
      for name in ('aaa', 'bbb')
  }


def _kill_mid_save(kill9, task_dir, workdir, marker, timeout=300) -> None:
  """Runs the worker until it is inside the save of KILL_STEP, then SIGKILLs it."""
  proc = subprocess.Popen(
      [sys.executable, worker.__file__, task_dir, workdir, marker, str(KILL_STEP)],
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  kill9(proc, lambda: os.path.exists(marker), timeout, f'the save of step {KILL_STEP}')


@pytest.mark.slow
def test_kill_9_during_an_orbax_save_then_resume_gives_the_same_adapters(tmp_path, kill9):
  task_dir = str(tmp_path / 'tasks')
  tl.write_tasks(task_dir)
  config = worker.kill_config(task_dir)
  ttt.run_ttt(config, str(tmp_path / 'straight'))
  want = _adapters(str(tmp_path / 'straight'))

  killed = str(tmp_path / 'killed')
  _kill_mid_save(kill9, task_dir, killed, str(tmp_path / 'marker'))
  saves = sorted(os.listdir(os.path.join(killed, 'checkpoints', 'len_128')))
  assert saves[:2] == [str(KILL_STEP - 2), str(KILL_STEP - 1)]  # the complete ones
  assert saves[2].startswith(f'{KILL_STEP}.orbax-checkpoint-tmp')  # the save killed midway
  with open(os.path.join(killed, run_lock.LOCK_FILE)) as f:
    assert f.read()  # the killed run's name is still in its lock: taken over below

  results = ttt.run_ttt(config, killed)
  assert sorted((r.task, r.status, r.steps) for r in results) == [(0, 'done', 3), (1, 'done', 3)]
  got = _adapters(killed)
  for name in want:
    for target in want[name]:
      for ab in ('a', 'b'):
        np.testing.assert_array_equal(got[name][target][ab], want[name][target][ab])
  assert not [s for s in os.listdir(os.path.join(killed, 'checkpoints', 'len_128')) if 'tmp' in s]
