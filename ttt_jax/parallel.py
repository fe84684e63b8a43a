"""Device mesh, partition rules and task-axis sharding.

The TTT step is `vmap` over a task axis T; that axis is sharded over the
mesh's 'data' and 'fsdp' axes together, so each device trains its own
T / (n_data * n_fsdp) adapters. Base weights follow a table of regex rules
over their paths; with 'fsdp' and 'tensor' of size 1 every rule means
"replicated", so one table serves a laptop and a pod. With 'fsdp' > 1 the
weights are split over it and XLA all-gathers each layer's weights where it
is used (ZeRO-3): the devices along 'fsdp' share the weight memory but
train different tasks, so none repeats another's compute or activations.

Multi-host: call `initialize_distributed(...)` (or set the usual
`JAX_COORDINATOR_ADDRESS` / process env and call it with no arguments) before
any other JAX call; every process then builds the same global mesh over
`jax.devices()` and the same host arrays, and `put_global` hands each process
only its addressable shards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DEFAULT_AXES: tuple[tuple[str, int], ...] = (('data', -1), ('fsdp', 1), ('tensor', 1))
# The slot axis T of every per-task array (adapters, optimizer state, data).
TASK_AXES: tuple[str, ...] = ('data', 'fsdp')
TASK_SPEC = P(TASK_AXES)

# Param path (as 'layers/q', 'embed', ...) -> spec. First match wins; no match
# is replicated. Stacked layer weights carry the layer axis L first.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r'^embed$', P('tensor', 'fsdp')),
    (r'^lm_head$', P('fsdp', 'tensor')),
    (r'^layers/(q|k|v|gate|up)$', P(None, 'fsdp', 'tensor')),
    (r'^layers/(o|down)$', P(None, 'tensor', 'fsdp')),
    (r'norm', P()),
)


def mesh_shape(axes: Sequence[tuple[str, int]], num_devices: int) -> tuple[int, ...]:
  """Resolves the one allowed -1 size to the devices left over."""
  sizes = [size for _, size in axes]
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh axes {axes}: at most one size may be -1')
  known = math.prod(s for s in sizes if s != -1)
  if known <= 0 or num_devices % known:
    raise ValueError(f'mesh axes {axes} do not divide {num_devices} devices')
  return tuple(num_devices // known if s == -1 else s for s in sizes)


def make_mesh(
    axes: Sequence[tuple[str, int]] = DEFAULT_AXES, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A mesh over all (or the given) devices; -1 fills with what is left."""
  axes = tuple((str(name), int(size)) for name, size in axes)
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axes, len(devices))
  if math.prod(shape) != len(devices):
    raise ValueError(
        f'mesh axes {axes} -> {shape} use {math.prod(shape)} '
        f'of {len(devices)} devices; give one size as -1'
    )
  names = tuple(name for name, _ in axes)
  # Auto axes: specs on inputs, XLA propagates through the vmapped step.
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def path_name(path) -> str:
  """'layers/q' for the key path of params['layers']['q']."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def spec_for(name: str, ndim: int, rules: Sequence[tuple[str, P]] = PARAM_RULES) -> P:
  for pattern, spec in rules:
    if re.search(pattern, name):
      if len(spec) > ndim:
        raise ValueError(
            f'partition rule {pattern!r} -> {spec} has more axes '
            f'than param {name!r} (ndim {ndim})'
        )
      return spec
  return P()


def _check_divisible(name: str, shape: tuple[int, ...], spec: P, mesh: Mesh):
  for dim, axis in zip(shape, spec):
    names = () if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    size = math.prod(mesh.shape[a] for a in names)
    if dim % size:
      raise ValueError(
          f'{name}: dim {dim} of shape {shape} is not divisible '
          f'by mesh axes {names} (size {size}) in spec {spec}'
      )


def param_shardings(params: Any, mesh: Mesh, rules: Sequence[tuple[str, P]] = PARAM_RULES) -> Any:
  """NamedSharding per base-param leaf from the regex rules."""

  def one(path, leaf):
    name = path_name(path)
    spec = spec_for(name, leaf.ndim, rules)
    _check_divisible(name, leaf.shape, spec, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(one, params)


def num_task_shards(mesh_shape: dict[str, int]) -> int:
  """How many ways the task axis is split: the product of the TASK_AXES sizes."""
  missing = [a for a in TASK_AXES if a not in mesh_shape]
  if missing:
    raise ValueError(
        f'mesh axes {tuple(mesh_shape)} lack the task axes {missing}; '
        f'a mesh needs {TASK_AXES} (size 1 is fine)'
    )
  return math.prod(mesh_shape[a] for a in TASK_AXES)


def task_sharding(mesh: Mesh, num_tasks: int | None = None) -> NamedSharding:
  """Leading task axis over 'data' x 'fsdp', everything else replicated."""
  shards = num_task_shards(dict(mesh.shape))
  if num_tasks is not None and num_tasks % shards:
    sizes = ' x '.join(f'{a}={mesh.shape[a]}' for a in TASK_AXES)
    raise ValueError(
        f'{num_tasks} task slots do not divide over the {shards} task shards '
        f'of the mesh ({sizes}); use a multiple of {shards}'
    )
  return NamedSharding(mesh, TASK_SPEC)


def constrain(tree: Any, mesh: Mesh | None, spec: P) -> Any:
  """`with_sharding_constraint` to `spec` on `mesh`; the identity without a mesh."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
  """Places a host array (the same on every process) as a global array."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put(x: Any, sharding: NamedSharding) -> jax.Array:
  """Global arrays are resharded; host (or, multi-host, process-local)
  values are placed with `put_global`."""
  if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  return put_global(x, sharding)


def shard_tasks(tree: Any, mesh: Mesh) -> Any:
  """Every leaf has a leading task axis: shard it over 'data' x 'fsdp'."""
  return jax.tree.map(lambda x: put(x, task_sharding(mesh, np.shape(x)[0])), tree)


def shard_params(params: Any, mesh: Mesh, rules: Sequence[tuple[str, P]] = PARAM_RULES) -> Any:
  shardings = param_shardings(params, mesh, rules)
  return jax.tree.map(put, params, shardings)


def initialize_distributed(
    enabled: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
  """Multi-host start-up (must precede any other JAX call); None arguments
  are auto-detected by JAX on TPU pods, SLURM and the like."""
  if not enabled:
    return
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
