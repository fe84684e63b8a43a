"""Dry-run memory planner for the TTT step: will T tasks fit on this mesh?

Lowers and compiles `ttt_step.train_step` for abstract inputs
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

from ttt_jax import parallel
from ttt_jax.model import llama, quant
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import slots as slot_ops
from ttt_jax.train import ttt_step
from ttt_jax.train.ttt_config import TTTConfig

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
    ttt_config: TTTConfig,
    num_tasks: int,
    seq_len: int,
    max_examples: int,
    mesh_axes: Sequence[tuple[str, int]] = parallel.DEFAULT_AXES,
    packed: bool = False,
    quantize: str | None = None,
    double_quant: bool = False,
) -> MemoryPlan:
  """Compiles (never runs) the step on a mesh over this process's devices for the slots'
  recipe `ttt_config` (an in-step sweep's: the largest rank, hyper.slot_config), its slots
  vmapped as an accelerator runs them (not lax.map, what 'auto' picks on one CPU); with
  `packed`, on rows with segment ids (data.pack), whose attention kernel may differ; with
  `quantize` ('nf4' | 'int8') the base's projections held quantized (model/quant.py)."""
  ttt_config = dataclasses.replace(ttt_config, over_slots='vmap')
  mesh = parallel.make_mesh(mesh_axes)
  tasks = parallel.task_sharding(mesh, num_tasks)  # T must divide over 'data' x 'fsdp'

  def base():
    params = llama.init_params(model_config, jax.random.key(0))
    return quant.quantize_params(params, quantize, double_quant) if quantize else params

  params = jax.eval_shape(base)
  params = _abstract(params, lambda p: parallel.param_shardings(p, mesh))
  slots, data = jax.eval_shape(
      lambda: slot_ops.empty_slots(
          num_tasks, max_examples, seq_len, model_config, ttt_config, packed=packed
      )
  )
  slots, data = _abstract((slots, data), lambda tree: jax.tree.map(lambda _: tasks, tree))
  compiled = ttt_step.train_step.lower(
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


def plan_rows(
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    num_tasks: Sequence[int],
    seq_len: int,
    max_examples: int,
    mesh_axes: Sequence[tuple[str, int]],
    budget_gb: float = 80.0,
    quantize: str | None = None,
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
    plan = plan_ttt_step(
        model_config, ttt_config, t, seq_len, max_examples, mesh_axes, quantize=quantize
    )
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
