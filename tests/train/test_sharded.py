"""The same TTT numbers on 8 fake CPU devices (task axis sharded over
data x fsdp, base weights over fsdp) as on one."""

import os
import subprocess
import sys

import jax
import numpy as np

import ttt_testlib as tl
from ttt_jax.train import scheduler

WORKER = os.path.join(os.path.dirname(__file__), 'sharded_worker.py')


def test_sharded_task_axis_matches_one_device(tmp_path):
  out = tmp_path / 'sharded.npz'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run(
      [sys.executable, WORKER, str(out)],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  sharded = np.load(out)

  # The same computation on this process's single device.
  import sharded_worker  # pylint: disable=import-outside-toplevel

  params, arrays = tl.base_params(), tl.task_arrays(sharded_worker.NUM_JOBS, seed=2)
  slots, losses = tl.train_slots(params, arrays, sharded_worker.NUM_SLOTS, sharded_worker.STEPS)
  for prefix in ('', 'fsdp_'):  # data=8, and data=2 x fsdp=4
    np.testing.assert_allclose(sharded[f'{prefix}losses'], losses, atol=1e-5, rtol=0)
    for i, leaf in enumerate(jax.tree.leaves(slots.lora)):
      np.testing.assert_allclose(sharded[f'{prefix}lora_{i}'], np.asarray(leaf), atol=1e-5, rtol=0)

  # The sharded stream (data=2 x fsdp=4) handed out every job, each the adapter a 1-device stream gives.
  adapters = {}
  jobs = [scheduler.Job(t, tl.TTT.hyper()) for t in range(sharded_worker.NUM_JOBS)]
  scheduler.train_stream(
      params,
      jobs,
      lambda t: tl.one_task(arrays, t),
      model_config=tl.MODEL,
      ttt_config=tl.TTT,
      num_slots=sharded_worker.NUM_SLOTS,
      max_examples=tl.N,
      seq_len=tl.S,
      on_job_done=lambda r, lora: adapters.__setitem__(r.job, lora),
  )
  assert sorted(adapters) == list(range(sharded_worker.NUM_JOBS))
  for job, lora in adapters.items():
    for i, leaf in enumerate(jax.tree.leaves(lora)):
      np.testing.assert_allclose(sharded[f'stream_{job}_{i}'], leaf, atol=1e-5, rtol=0)
