"""Run by test_sharded.py in a subprocess with 8 fake CPU devices (XLA_FLAGS
must be set before jax is imported): K steps of 8 task slots sharded over
the mesh's data x fsdp axes, on data=8 and on data=2 x fsdp=4 (base weights
split over fsdp), then a short sharded stream; results to an .npz."""

import os
import sys

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
sys.path.insert(0, os.path.dirname(__file__))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

import ttt_testlib as tl  # pylint: disable=wrong-import-position
from ttt_jax import parallel  # pylint: disable=wrong-import-position
from ttt_jax.train import scheduler  # pylint: disable=wrong-import-position
from ttt_jax.train import slots as slot_ops  # pylint: disable=wrong-import-position

NUM_SLOTS, STEPS, NUM_JOBS = 8, 3, 10


def sharded_steps(params, arrays, mesh):
  slots, losses = tl.train_slots(params, arrays, NUM_SLOTS, STEPS, mesh)
  tasks = parallel.task_sharding(mesh)
  for x in jax.tree.leaves(slots):
    assert x.sharding.is_equivalent_to(tasks, x.ndim), x.sharding
    # Every device holds T / 8 slots, and a different one: no task is
    # repeated along 'fsdp'.
    assert x.sharding.shard_shape(x.shape)[0] == NUM_SLOTS // 8, x.sharding
    starts = {shard.index[0].start for shard in x.addressable_shards}
    assert len(x.addressable_shards) == 8 and len(starts) == 8, starts
  return slots, losses


def main(out_path):
  assert jax.device_count() == 8, jax.devices()
  mesh = parallel.make_mesh()
  params = parallel.shard_params(tl.base_params(), mesh)
  arrays = tl.task_arrays(NUM_JOBS, seed=2)
  slots, losses = sharded_steps(params, arrays, mesh)
  # Base weights FSDP-sharded over 4 devices, the tasks over all 8.
  fsdp_mesh = parallel.make_mesh((('data', 2), ('fsdp', 4), ('tensor', 1)))
  fsdp_params = parallel.shard_params(tl.base_params(), fsdp_mesh)
  q = fsdp_params['layers']['q']
  assert q.sharding.shard_shape(q.shape)[1] == q.shape[1] // 4, q.sharding
  fsdp_slots, fsdp_losses = sharded_steps(fsdp_params, arrays, fsdp_mesh)
  # 4 slots would divide over 'data' (the old task axis) but not data x fsdp.
  with pytest.raises(
      ValueError,
      match=r'4 task slots do not divide over the 8 task shards '
      r'of the mesh \(data=2 x fsdp=4\)',
  ):
    slot_ops.empty_slots(4, tl.N, tl.S, tl.MODEL, tl.TTT, fsdp_mesh)
  out = {'losses': losses, 'fsdp_losses': fsdp_losses}
  for i, (leaf, fsdp_leaf) in enumerate(
      zip(jax.tree.leaves(slots.lora), jax.tree.leaves(fsdp_slots.lora))
  ):
    out[f'lora_{i}'] = np.asarray(leaf)
    out[f'fsdp_lora_{i}'] = np.asarray(fsdp_leaf)
  jobs = [scheduler.Job(t, tl.TTT.hyper()) for t in range(NUM_JOBS)]
  adapters = {}
  scheduler.train_stream(
      fsdp_params,
      jobs,
      lambda t: tl.one_task(arrays, t),
      model_config=tl.MODEL,
      ttt_config=tl.TTT,
      num_slots=NUM_SLOTS,
      max_examples=tl.N,
      seq_len=tl.S,
      mesh=fsdp_mesh,
      on_job_done=lambda r, lora: adapters.__setitem__(r.job, lora),
  )
  for job, lora in adapters.items():
    for i, leaf in enumerate(jax.tree.leaves(lora)):
      out[f'stream_{job}_{i}'] = leaf
  np.savez(out_path, **out)


if __name__ == '__main__':
  main(sys.argv[1])
