"""Two local JAX processes (2 fake CPU devices each, collectives over
loopback) train 4 task slots with the task axis sharded across both: the
same losses and adapters as one process computing all 4."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

import multiprocess_worker as worker
import ttt_testlib as tl

WORKER = os.path.join(os.path.dirname(__file__), 'multiprocess_worker.py')
NUM_PROCESSES = 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_cluster(out_path: str, timeout_s: float = 240) -> None:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  port = _free_port()
  procs = [
      subprocess.Popen(
          [sys.executable, WORKER, str(i), str(NUM_PROCESSES), str(port), out_path],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(NUM_PROCESSES)
  ]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=timeout_s)[0])
  finally:
    for proc in procs:  # a hung peer must not outlive the test
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for i, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f'process {i} exited {proc.returncode}:\n{log[-4000:]}'


def test_two_processes_match_one(tmp_path):
  out = str(tmp_path / 'multiprocess.npz')
  _run_cluster(out)
  multi = np.load(out)

  params, arrays = tl.base_params(), tl.task_arrays(worker.NUM_SLOTS, seed=3)
  slots, losses = tl.train_slots(params, arrays, worker.NUM_SLOTS, worker.STEPS)

  np.testing.assert_allclose(multi['losses'], losses, atol=1e-5, rtol=0)
  assert np.all(np.isfinite(multi['losses']))
  for slot in range(worker.NUM_SLOTS):
    leaves = jax.tree.leaves(jax.tree.map(lambda x: x[slot], slots.lora))
    for i, leaf in enumerate(leaves):
      np.testing.assert_allclose(multi[f'lora_{slot}_{i}'], np.asarray(leaf), atol=1e-5, rtol=0)
  # Training moved every B (all start at zero), so the comparison is not vacuous.
  names = [path for path, _ in jax.tree_util.tree_flatten_with_path(slots.lora)[0]]
  for i, path in enumerate(names):
    if path[-1].key == 'b':
      assert np.abs(multi[f'lora_0_{i}']).max() > 0, path
