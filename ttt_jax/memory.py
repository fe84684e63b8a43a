"""Dry-run memory planner for the TTT step: will T tasks fit on this mesh?

Lowers and compiles `ttt.train_step` for abstract inputs
(`jax.ShapeDtypeStruct`s carrying their shardings: nothing is allocated) and
reads XLA's per-device `memory_analysis()`. To plan for N devices on a
machine without them, run in a process with N fake CPU devices (set before
JAX starts its backend; `python -m launch.bench --bench=memory
--num_devices=N`). A CPU-compiled plan is an estimate of GPU/TPU memory: other
backends fuse and schedule differently (and add workspace, e.g. cuBLAS and
NCCL buffers) — leave ~10-15% headroom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ttt_jax import parallel
from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import ttt

GB = 1e9


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device bytes of one compiled TTT step."""

  argument: int  # inputs: base-weight shards, slots (adapters + optimizer), data
  output: int  # new slots + metrics (aliased with donated inputs, not added again)
  alias: int  # output bytes that reuse donated input buffers
  temp: int  # activations, gradients, gathered weights, workspace
  code: int  # generated code

  @property
  def peak(self) -> int:
    """What must be resident at once: arguments + non-aliased outputs + temporaries."""
    return self.argument + self.output - self.alias + self.temp + self.code


def _abstract(tree, sharding_of):
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sharding_of(tree)
  )


def plan_ttt_step(
    model_config: ModelConfig,
    ttt_config: ttt.TTTConfig,
    num_tasks: int,
    seq_len: int,
    max_examples: int,
    mesh_axes: Sequence[tuple[str, int]] = parallel.DEFAULT_AXES,
) -> MemoryPlan:
  """Compiles (never runs) the step on a mesh over this process's devices."""
  mesh = parallel.make_mesh(mesh_axes)
  tasks = parallel.task_sharding(mesh, num_tasks)  # T must divide over 'data' x 'fsdp'
  params = jax.eval_shape(lambda: llama.init_params(model_config, jax.random.key(0)))
  params = _abstract(params, lambda p: parallel.param_shardings(p, mesh))
  slots = jax.eval_shape(lambda: _empty(num_tasks, model_config, ttt_config))
  slots = _abstract(slots, lambda tree: jax.tree.map(lambda _: tasks, tree))
  data = TTTArrays(
      tokens=jax.ShapeDtypeStruct((num_tasks, max_examples, seq_len), jnp.int32, sharding=tasks),
      loss_mask=jax.ShapeDtypeStruct((num_tasks, max_examples, seq_len), jnp.int32, sharding=tasks),
      lengths=jax.ShapeDtypeStruct((num_tasks, max_examples), jnp.int32, sharding=tasks),
      num_examples=jax.ShapeDtypeStruct((num_tasks,), jnp.int32, sharding=tasks),
  )
  compiled = ttt.train_step.lower(
      params, slots, data, model_config=model_config, ttt_config=ttt_config, mesh=mesh
  ).compile()
  m = compiled.memory_analysis()
  if m is None:
    raise RuntimeError(f'{jax.devices()[0].platform}: memory_analysis() is not available')
  return MemoryPlan(
      argument=m.argument_size_in_bytes,
      output=m.output_size_in_bytes,
      alias=m.alias_size_in_bytes,
      temp=m.temp_size_in_bytes,
      code=m.generated_code_size_in_bytes,
  )


def _empty(num_tasks: int, model_config: ModelConfig, ttt_config: ttt.TTTConfig) -> ttt.Slots:
  task_T = jnp.zeros((num_tasks,), jnp.int32)
  lora, opt_state = ttt.fresh_slot_states(task_T, model_config, ttt_config)
  return ttt.Slots(
      lora=lora,
      opt_state=opt_state,
      step=task_T,
      total_steps=task_T,
      status=task_T,
      job=task_T,
      task=task_T,
      key=task_T,
      lr=jnp.zeros((num_tasks,), jnp.float32),
  )


def plan_rows(
    model_config: ModelConfig,
    ttt_config: ttt.TTTConfig,
    num_tasks: Sequence[int],
    seq_len: int,
    max_examples: int,
    mesh_axes: Sequence[tuple[str, int]],
    budget_gb: float = 80.0,
) -> list[dict]:
  """One table row per T (those that do not divide over 'data' x 'fsdp' are skipped)."""
  mesh_shape = dict(
      zip((a for a, _ in mesh_axes), parallel.mesh_shape(mesh_axes, jax.device_count()))
  )
  shards = parallel.num_task_shards(mesh_shape)
  rows = []
  for t in num_tasks:
    if t % shards:
      continue
    plan = plan_ttt_step(model_config, ttt_config, t, seq_len, max_examples, mesh_axes)
    rows.append(
        {
            'devices': jax.device_count(),
            'mesh': ' '.join(f'{a}={s}' for a, s in mesh_shape.items() if s > 1) or 'single',
            'seq': seq_len,
            'T': t,
            'tasks/device': t // shards,
            'args GB': plan.argument / GB,
            'outputs GB': (plan.output - plan.alias) / GB,
            'temp GB': plan.temp / GB,
            'peak GB/device': plan.peak / GB,
            f'fits {budget_gb:g} GB': plan.peak / GB <= budget_gb,
        }
    )
  return rows
