"""One process per run directory: a second is refused naming the holder, a lock left by a
killed process is taken over, and every kind of run takes the lock before any work."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from configs import demo as demo_config
from configs import finetune as finetune_config
from configs import predict as predict_config
from configs import ttt as ttt_config
from ttt_jax import demo, run_lock
from ttt_jax.errors import RunLockedError
from ttt_jax.infer import predict
from ttt_jax.train import finetune, ttt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = textwrap.dedent("""
    import sys, time
    from ttt_jax.run_lock import RunLock
    with RunLock(sys.argv[1]):
      print('locked', flush=True)
      time.sleep(120)
    """)


@pytest.fixture
def holder(tmp_path):
  """A second process holding the lock of tmp_path/'run' (killed at the end)."""
  directory = str(tmp_path / 'run')
  proc = subprocess.Popen(
      [sys.executable, '-c', HOLDER, directory], cwd=ROOT, stdout=subprocess.PIPE, text=True
  )
  try:
    assert proc.stdout.readline() == 'locked\n'
    yield directory, proc
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()


def test_a_second_process_is_refused_with_the_holders_name(holder):
  directory, proc = holder
  with pytest.raises(RunLockedError) as raised:
    with run_lock.RunLock(directory):
      pass
  message = str(raised.value)
  assert raised.value.path == os.path.join(directory, run_lock.LOCK_FILE)
  assert f'is in use by pid {proc.pid} on host {socket.gethostname()}, started ' in message
  assert message.startswith(raised.value.path) and '\n' not in message


def test_a_lock_left_by_a_killed_process_is_taken_over(holder, caplog):
  directory, proc = holder
  proc.send_signal(signal.SIGKILL)  # no cleanup: its name stays in the lock file
  proc.wait()
  with open(os.path.join(directory, run_lock.LOCK_FILE)) as f:
    assert json.load(f)['pid'] == proc.pid
  with caplog.at_level(logging.WARNING), run_lock.RunLock(directory):
    with open(os.path.join(directory, run_lock.LOCK_FILE)) as f:
      assert json.load(f)['pid'] == os.getpid()
  assert f'taking over the lock of pid {proc.pid}' in caplog.text
  with open(os.path.join(directory, run_lock.LOCK_FILE)) as f:
    assert f.read() == ''  # released: free, nobody to name


def test_the_lock_is_free_again_after_the_run(tmp_path):
  with run_lock.RunLock(str(tmp_path)):
    with pytest.raises(RunLockedError, match=f'in use by pid {os.getpid()}'):
      run_lock.RunLock(str(tmp_path)).__enter__()
  with run_lock.RunLock(str(tmp_path)):
    pass


@pytest.mark.parametrize('stage', ['ttt', 'predict', 'finetune', 'demo'])
def test_every_run_refuses_a_locked_workdir_before_any_work(stage, tmp_path):
  workdir = str(tmp_path / 'work')
  run = {
      'ttt': lambda: ttt.run_ttt(ttt_config.get_config('runlocal'), workdir),
      'predict': lambda: predict.run_from_config(predict_config.get_config('runlocal'), workdir),
      'finetune': lambda: finetune.train(finetune_config.get_config('runlocal'), workdir),
      'demo': lambda: demo.run_demo(demo_config.get_config(), workdir),
  }[stage]
  with run_lock.RunLock(workdir):
    with pytest.raises(RunLockedError, match=f'{workdir} is in use by pid {os.getpid()}'):
      run()
  assert sorted(os.listdir(workdir)) == [run_lock.LOCK_FILE]  # nothing was written
