"""Mesh construction and partition rules (one CPU device here; the 8-device
run is in test_sharded.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import ttt_testlib as tl
from ttt_jax import parallel


def test_mesh_shape_fills_the_minus_one():
  assert parallel.mesh_shape((('data', -1), ('fsdp', 2), ('tensor', 1)), 8) == (4, 2, 1)
  assert parallel.mesh_shape((('data', 8),), 8) == (8,)
  with pytest.raises(ValueError, match='at most one'):
    parallel.mesh_shape((('data', -1), ('fsdp', -1)), 8)
  with pytest.raises(ValueError, match='do not divide'):
    parallel.mesh_shape((('data', -1), ('fsdp', 3)), 8)


def test_make_mesh_on_this_host():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')
  assert mesh.devices.size == jax.device_count()


def test_partition_rules():
  assert parallel.spec_for('layers/q', 3) == P(None, 'fsdp', 'tensor')
  assert parallel.spec_for('layers/down', 3) == P(None, 'tensor', 'fsdp')
  assert parallel.spec_for('layers/attn_norm', 2) == P()
  assert parallel.spec_for('something/new', 2) == P()  # replicated by default
  mesh = parallel.make_mesh()
  shardings = parallel.param_shardings(tl.base_params(), mesh)
  assert shardings['layers']['gate'].spec == P(None, 'fsdp', 'tensor')
  placed = parallel.shard_params(tl.base_params(), mesh)
  np.testing.assert_array_equal(np.asarray(placed['embed']), np.asarray(tl.base_params()['embed']))


def test_task_sharding_needs_a_multiple_of_the_task_shards():
  mesh = parallel.make_mesh()
  tree = parallel.shard_tasks({'x': np.zeros((3, 2))}, mesh)
  assert tree['x'].sharding.spec == P(('data', 'fsdp'))
  assert parallel.num_task_shards({'data': 2, 'fsdp': 4, 'tensor': 2}) == 8
  with pytest.raises(ValueError, match=r"lack the task axes \['fsdp'\]"):
    parallel.num_task_shards({'data': 8})
  if jax.device_count() > 1:
    with pytest.raises(ValueError, match='multiple'):
      parallel.task_sharding(mesh, jax.device_count() + 1)
