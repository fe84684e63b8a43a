"""Jitted slot operations around the step: empty slots, placing a job in a slot, reading
one back. `slot` is always an array argument, so one compilation serves every slot."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttt_jax import parallel
from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import optim
from ttt_jax.train.hyper import Hyper
from ttt_jax.train.ttt_config import TTTConfig, total_steps
from ttt_jax.train.ttt_step import Slots, Status, fresh_slot_states

NO_CAP = np.iinfo(np.int32).max  # the step cap of a job without max_steps


def slot_values(hyper: Hyper, ttt_config: TTTConfig) -> dict:
  """A job's knobs as its slot carries them: float32 lr, LoRA scale, warmup fraction and
  weight decay, and its int32 step cap."""
  return {
      'lr': np.float32(hyper.lr),
      'lora_scale': np.float32(hyper.of(ttt_config).lora.scale),
      'warmup_frac': np.float32(hyper.warmup_frac),
      'weight_decay': np.float32(hyper.weight_decay),
      'step_cap': np.int32(NO_CAP if hyper.max_steps is None else hyper.max_steps),
  }


@functools.partial(jax.jit, static_argnames=('rank', 'model_config', 'ttt_config'))
def fresh_slot(
    task,
    job_seed,
    job,
    values: dict,
    num_examples,
    *,
    rank: int,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
) -> Slots:
  """One slot's state (no T axis) for a job of LoRA rank `rank` (its adapter zero-padded to
  the slots' rank) with the knobs `values` (slot_values) at its start."""
  seed = jnp.asarray(job_seed, jnp.int32)
  adapter, opt_state = jax.tree.map(
      lambda x: x[0], fresh_slot_states(seed[None], model_config, ttt_config, rank)
  )
  uncapped = dataclasses.replace(ttt_config, max_steps=None)
  return Slots(
      lora=adapter,
      opt_state=optim.with_hyperparams(opt_state, weight_decay=values['weight_decay']),
      step=jnp.int32(0),
      total_steps=jnp.minimum(total_steps(num_examples, uncapped), values['step_cap']),
      status=jnp.int32(Status.RUNNING),
      job=jnp.asarray(job, jnp.int32),
      task=jnp.asarray(task, jnp.int32),
      seed=seed,
      lr=values['lr'],
      lora_scale=values['lora_scale'],
      warmup_frac=values['warmup_frac'],
  )


@functools.partial(jax.jit, static_argnames=('mesh',), donate_argnames=('tree',))
def put_slot(tree: Any, slot, one: Any, mesh: Mesh | None = None) -> Any:
  """`tree[slot] = one` leaf by leaf."""
  tree = jax.tree.map(lambda full, x: full.at[slot].set(jnp.asarray(x, full.dtype)), tree, one)
  return parallel.constrain(tree, mesh, parallel.TASK_SPEC)


def place_job(
    slots: Slots,
    data: TTTArrays,
    slot: int,
    task_data: TTTArrays,
    task: int,
    job: int,
    hyper: Hyper,
    *,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    mesh: Mesh | None = None,
    job_seed: int | None = None,
) -> tuple[Slots, TTTArrays]:
  """Starts `job` (task `task` with the knobs `hyper`) in slot `slot` with a fresh
  adapter and optimizer state; `task_data` is that task's [N, S] arrays.
  `job_seed` seeds the adapter init and data order (default: the task index).
  `ttt_config` is the slots' recipe: its rank the largest of the run (hyper.slot_config)."""
  if hyper.rank > ttt_config.lora.rank:
    raise ValueError(
        f"job {job}: LoRA rank {hyper.rank}, more than the slots' rank {ttt_config.lora.rank}"
    )
  one = fresh_slot(
      task,
      task if job_seed is None else job_seed,
      job,
      slot_values(hyper, ttt_config),
      task_data.num_examples,
      rank=hyper.rank,
      model_config=model_config,
      ttt_config=ttt_config,
  )
  slot = jnp.int32(slot)
  return put_slot(slots, slot, one, mesh=mesh), put_slot(data, slot, task_data, mesh=mesh)


def empty_slots(
    num_slots: int,
    max_examples: int,
    seq_len: int,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    mesh: Mesh | None = None,
    packed: bool = False,
) -> tuple[Slots, TTTArrays]:
  """All-EMPTY slots (zeros) of the right shapes, created on device, sharded; with
  segment ids when the run's rows are `packed`."""

  def make():
    zeros_T = jnp.zeros((num_slots,), jnp.int32)
    lora, opt_state = fresh_slot_states(zeros_T, model_config, ttt_config)
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    slots = Slots(
        lora=zeros(lora),
        opt_state=zeros(opt_state),
        step=zeros_T,
        total_steps=zeros_T,
        status=jnp.full((num_slots,), Status.EMPTY, jnp.int32),
        job=zeros_T - 1,
        task=zeros_T,
        seed=zeros_T,
        lr=jnp.zeros((num_slots,), jnp.float32),
        lora_scale=jnp.zeros((num_slots,), jnp.float32),
        warmup_frac=jnp.zeros((num_slots,), jnp.float32),
    )
    data = TTTArrays(
        tokens=jnp.zeros((num_slots, max_examples, seq_len), jnp.int32),
        loss_mask=jnp.zeros((num_slots, max_examples, seq_len), jnp.int32),
        lengths=jnp.zeros((num_slots, max_examples), jnp.int32),
        num_examples=zeros_T,
        segments=jnp.zeros((num_slots, max_examples, seq_len), jnp.int32) if packed else None,
    )
    return slots, data

  if mesh is None:
    return jax.jit(make)()
  parallel.task_sharding(mesh, num_slots)  # checks divisibility
  return jax.jit(make, out_shardings=NamedSharding(mesh, parallel.TASK_SPEC))()


@functools.partial(jax.jit, static_argnames=('mesh',))
def _gather_slot(tree: Any, slot, mesh: Mesh | None) -> Any:
  return parallel.constrain(jax.tree.map(lambda x: x[slot], tree), mesh, P())


def take_slot(tree: Any, slot: int, mesh: Mesh | None = None) -> Any:
  """One slot's leaves as host numpy arrays (replicated first, so this also
  works when the slot lives on another host)."""
  return jax.device_get(_gather_slot(tree, jnp.int32(slot), mesh))
