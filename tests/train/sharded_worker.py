"""Run by test_sharded.py in a subprocess with 8 fake CPU devices (XLA_FLAGS
must be set before jax is imported): K steps of 8 task slots sharded over
the mesh's data axis, then a short sharded stream; results to an .npz."""

import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(__file__))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import ttt_testlib as tl  # pylint: disable=wrong-import-position
from ttt_jax import parallel  # pylint: disable=wrong-import-position
from ttt_jax.train import ttt  # pylint: disable=wrong-import-position

NUM_SLOTS, STEPS, NUM_JOBS = 8, 3, 10


def sharded_steps(params, arrays, mesh):
  slots, losses = tl.train_slots(params, arrays, NUM_SLOTS, STEPS, mesh)
  spread = {len(x.sharding.device_set) for x in jax.tree.leaves(slots)}
  assert spread == {8}, spread
  assert slots.lora['q']['a'].sharding.spec[0] == 'data', slots.lora['q']['a'].sharding
  return slots, losses


def main(out_path):
  assert jax.device_count() == 8, jax.devices()
  mesh = parallel.make_mesh()
  params = parallel.shard_params(tl.base_params(), mesh)
  arrays = tl.task_arrays(NUM_JOBS, seed=2)
  slots, losses = sharded_steps(params, arrays, mesh)
  # Base weights FSDP-sharded over 2 devices, tasks over 4: the same numbers.
  fsdp_mesh = parallel.make_mesh((('data', -1), ('fsdp', 2), ('tensor', 1)))
  fsdp_params = parallel.shard_params(tl.base_params(), fsdp_mesh)
  assert len(fsdp_params['layers']['q'].sharding.device_set) == 8
  fsdp_slots, fsdp_losses = sharded_steps(fsdp_params, arrays, fsdp_mesh)
  np.testing.assert_allclose(fsdp_losses, losses, atol=1e-5, rtol=0)
  for x, y in zip(jax.tree.leaves(fsdp_slots.lora), jax.tree.leaves(slots.lora)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=0)
  out = {'losses': losses}
  for i, leaf in enumerate(jax.tree.leaves(slots.lora)):
    out[f'lora_{i}'] = np.asarray(leaf)
  jobs = [ttt.Job(task=t, lr=tl.TTT.lr) for t in range(NUM_JOBS)]
  adapters = {}
  ttt.train_stream(params, jobs, lambda t: tl.one_task(arrays, t), model_config=tl.MODEL,
                   ttt_config=tl.TTT, num_slots=NUM_SLOTS, max_examples=tl.N, seq_len=tl.S,
                   mesh=mesh, on_job_done=lambda r, lora: adapters.__setitem__(r.job, lora))
  for job, lora in adapters.items():
    for i, leaf in enumerate(jax.tree.leaves(lora)):
      out[f'stream_{job}_{i}'] = leaf
  np.savez(out_path, **out)


if __name__ == '__main__':
  main(sys.argv[1])
