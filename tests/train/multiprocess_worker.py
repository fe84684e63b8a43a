"""One of the processes test_multiprocess.py starts: joins a 2-process JAX
cluster over loopback (CPU collectives: gloo, JAX's default), each process
with 2 fake CPU devices (XLA_FLAGS, set by the test: importing this module
must not change the importing process's devices), and trains 4 task slots sharded over the 4 global
devices. Process 0 writes the losses and adapters to an .npz.

  python multiprocess_worker.py <process_id> <num_processes> <port> <out.npz>
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

NUM_SLOTS, STEPS = 4, 3


def main(process_id: int, num_processes: int, port: int, out_path: str) -> None:
  # Before any other JAX call: the CPU client is built with the cluster's collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=f'127.0.0.1:{port}',
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=60,
  )
  import ttt_testlib as tl  # pylint: disable=import-outside-toplevel
  from ttt_jax import parallel  # pylint: disable=import-outside-toplevel
  from ttt_jax.train import slots as slot_ops  # pylint: disable=import-outside-toplevel

  assert jax.process_count() == num_processes, jax.process_count()
  assert jax.device_count() == 2 * num_processes, jax.devices()
  mesh = parallel.make_mesh()  # every global device on 'data'
  params = parallel.shard_params(tl.base_params(), mesh)
  arrays = tl.task_arrays(NUM_SLOTS, seed=3)
  slots, losses = tl.train_slots(params, arrays, NUM_SLOTS, STEPS, mesh)
  # Each process holds only its own tasks' adapters.
  a = slots.lora['q']['a']
  assert not a.is_fully_addressable and len(a.addressable_shards) == 2, a.sharding
  assert {d.process_index for d in a.sharding.addressable_devices} == {process_id}
  out = {'losses': losses}
  for slot in range(NUM_SLOTS):
    for i, leaf in enumerate(jax.tree.leaves(slot_ops.take_slot(slots.lora, slot, mesh))):
      out[f'lora_{slot}_{i}'] = leaf
  if process_id == 0:
    np.savez(out_path, **out)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
