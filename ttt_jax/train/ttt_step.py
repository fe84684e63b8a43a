"""The vmapped TTT step: T tasks' adapters trained in one jitted call.

The frozen base params are shared; every per-task array carries a leading
task axis T ("slots"). `train_step` draws each slot's batch from its own
examples, computes `jax.vmap(value_and_grad(loss_one))` over the slots (each
task's gradient is exactly its own: the per-task losses are independent, as
if summed), and applies each slot's own clipped AdamW update. Slots differ in
their number of examples, so each carries its own step count, schedule,
epoch-wise shuffle and status; a finished, converged or failed (NaN) slot is
frozen (a failed one at its last finite state). Placing jobs in slots is
slots.py; keeping them busy, scheduler.py.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec as P

from ttt_jax import parallel
from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import init_lora, with_rank
from ttt_jax.train import optim
from ttt_jax.train.loss import loss_one
from ttt_jax.train.ttt_config import TTTConfig, job_rng, steps_per_epoch


class Status(enum.IntEnum):
  """A slot's state; str() is the lower-case name ('failed': its loss or update was NaN)."""

  RUNNING = 0
  DONE = 1
  CONVERGED = 2
  FAILED = 3
  EMPTY = 4

  def __str__(self) -> str:
    return self.name.lower()


class Slots(NamedTuple):
  """Everything a slot trains with, each leaf with a leading axis T."""

  lora: Any  # adapter tree, [T, L, in, r] / [T, L, r, out]
  opt_state: Any  # per-task optax state
  step: Any  # int32 [T]: optimizer steps this slot's job has taken
  total_steps: Any  # int32 [T]: epochs * ceil(num_examples / batch), capped
  status: Any  # int32 [T]: a Status
  job: Any  # int32 [T]: index into the run's job list, -1 when empty
  task: Any  # int32 [T]: task index (which examples the slot holds)
  seed: Any  # int32 [T]: the job's seed: its adapter init and data order (job_rng)
  lr: Any  # float32 [T]: peak learning rate
  lora_scale: Any  # float32 [T]: the job's LoRA scale (alpha / rank of its own rank)
  warmup_frac: Any  # float32 [T]: the job's share of warmup steps


def epoch_order(rng: jax.Array, num_examples, max_examples: int) -> jax.Array:
  """A permutation of [0, max_examples) with the valid examples first, shuffled."""
  scores_N = jax.random.uniform(rng, (max_examples,))
  scores_N = jnp.where(jnp.arange(max_examples) < num_examples, scores_N, 2.0)
  return jnp.argsort(scores_N)


def draw_batch(data: TTTArrays, job_seed, step, ttt_config: TTTConfig) -> dict:
  """One task's batch for `step`: rows i*B..i*B+B-1 of epoch e's shuffle (a row may
  hold several packed examples: its segment ids come along).

  A short last batch repeats a valid example with zero loss weight, so the
  forward never sees an empty row and the mean is over real targets only.
  """
  max_examples, seq_len = data.tokens.shape
  batch = ttt_config.batch_size
  n = data.num_examples
  per_epoch = steps_per_epoch(n, batch)
  epoch, within = step // per_epoch, step % per_epoch
  epoch_rng = jax.random.fold_in(jax.random.fold_in(job_rng(ttt_config.seed, job_seed), 1), epoch)
  order_N = epoch_order(epoch_rng, n, max_examples)
  pos_B = within * batch + jnp.arange(batch)
  valid_B = pos_B < n
  rows_B = order_N[jnp.clip(pos_B, 0, jnp.maximum(n - 1, 0))]
  batch = {
      'tokens': data.tokens[rows_B],
      'mask': jnp.arange(seq_len)[None, :] < data.lengths[rows_B][:, None],
      'loss_mask': data.loss_mask[rows_B] * valid_B[:, None].astype(data.loss_mask.dtype),
  }
  if data.segments is not None:  # packed rows
    batch['segments'] = data.segments[rows_B]
  return batch


def init_adapter(job_seed, model_config: ModelConfig, ttt_config: TTTConfig) -> Any:
  """A job's fresh adapter; a function of (ttt seed, job seed) only, so any slot,
  restart, device count or task selection gives the same one."""
  rng = jax.random.fold_in(job_rng(ttt_config.seed, job_seed), 0)
  return init_lora(rng, model_config, ttt_config.lora)


def flat_T(tree_T) -> jax.Array:
  """[T, P]: each slot's adapter (or gradient) leaves raveled into one vector, in tree order.

  The optimizer, the finite checks and the per-slot select run on these vectors: per
  leaf they were ~180 of the step's ~250 compiled kernels (14 leaves x every
  elementwise op), most of its compile time on a CPU."""
  return jnp.concatenate([x.reshape(x.shape[0], -1) for x in jax.tree.leaves(tree_T)], axis=1)


def unflat_T(flat_TP: jax.Array, like_T) -> Any:
  """The inverse of `flat_T`: a tree shaped and typed like `like_T`."""
  leaves, treedef = jax.tree.flatten(like_T)
  ends = np.cumsum([math.prod(x.shape[1:]) for x in leaves])
  parts = jnp.split(flat_TP, ends[:-1], axis=1)
  return treedef.unflatten([p.reshape(x.shape).astype(x.dtype) for p, x in zip(parts, leaves)])


def fresh_slot_states(
    seed_T, model_config: ModelConfig, ttt_config: TTTConfig, rank: int | None = None
):
  """Initial (adapters, optimizer states) of the jobs with seeds [T]; an optimizer state
  holds [T, P] moments of the `flat_T` adapter. With `rank` the adapters are drawn at
  that rank (as a run of that rank alone draws them) and zero-padded to the config's."""
  own = ttt_config
  if rank is not None:
    own = dataclasses.replace(ttt_config, lora=dataclasses.replace(ttt_config.lora, rank=rank))
  lora_T = jax.vmap(lambda s: init_adapter(s, model_config, own))(seed_T)
  lora_T = with_rank(lora_T, ttt_config.lora.rank)
  return lora_T, optim.init_task_states(ttt_config.optimizer(), flat_T(lora_T))


def update_one(adapter, opt_state, grads, step, total, peak_lr, tx, warmup_frac):
  """One task's clipped AdamW update at its own scheduled learning rate."""
  lr = peak_lr * optim.warmup_cosine(step, total, warmup_frac)
  opt_state = optim.with_hyperparams(opt_state, learning_rate=lr)
  updates, opt_state = tx.update(grads, opt_state, adapter)
  return optax.apply_updates(adapter, updates), opt_state, lr


def select_slots(mask_T, new, old):
  """Per-slot choice between two trees with a leading T axis."""

  def one(n, o):
    return jnp.where(mask_T.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

  return jax.tree.map(one, new, old)


def over_slots(ttt_config: TTTConfig, mesh: Mesh | None) -> str:
  """TTTConfig.over_slots with 'auto' resolved: 'map' on one CPU device, else 'vmap'."""
  if ttt_config.over_slots != 'auto':
    return ttt_config.over_slots
  one_device = mesh is None or mesh.size == 1
  return 'map' if jax.default_backend() == 'cpu' and one_device else 'vmap'


@functools.partial(
    jax.jit, static_argnames=('model_config', 'ttt_config', 'mesh'), donate_argnames=('slots',)
)
def train_step(
    base_params: Any,
    slots: Slots,
    data: TTTArrays,
    *,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    mesh: Mesh | None = None,
) -> tuple[Slots, dict]:
  """One optimizer step of every RUNNING slot; other slots pass through unchanged.

  Returns the new slots and per-slot metrics [T]: loss, lr, grad_norm (both 0 for a
  slot that was not running), tokens (real tokens in the batch), step, status, job,
  trained (the update was applied), finished (stopped this step).
  """
  tx = ttt_config.optimizer()
  batch_T = jax.vmap(draw_batch, in_axes=(0, 0, 0, None))(data, slots.seed, slots.step, ttt_config)
  # Only the adapter is differentiated: the slot's LoRA scale is a constant of its job.
  loss_and_grad = jax.value_and_grad(
      lambda adapter, batch, scale: loss_one(
          base_params,
          adapter,
          batch,
          model_config,
          ttt_config.lora,
          ttt_config.loss_capacity,
          lora_scale=scale,
      )
  )
  running_T = slots.status == Status.RUNNING
  if over_slots(ttt_config, mesh) == 'map':
    # One slot at a time: an idle (empty, finished) slot skips its forward and backward.
    def one_slot(xs):
      adapter, batch, scale, running = xs
      idle = lambda: (jnp.float32(0), jax.tree.map(jnp.zeros_like, adapter))
      return jax.lax.cond(running, lambda: loss_and_grad(adapter, batch, scale), idle)

    loss_T, grads_T = jax.lax.map(one_slot, (slots.lora, batch_T, slots.lora_scale, running_T))
  else:
    loss_T, grads_T = jax.vmap(loss_and_grad)(slots.lora, batch_T, slots.lora_scale)
  lora_TP, grads_TP = flat_T(slots.lora), flat_T(grads_T)
  new_TP, new_opt, lr_T = jax.vmap(update_one, in_axes=(0, 0, 0, 0, 0, 0, None, 0))(
      lora_TP,
      slots.opt_state,
      grads_TP,
      slots.step,
      slots.total_steps,
      slots.lr,
      tx,
      slots.warmup_frac,
  )

  all_finite = lambda x_TP: jnp.all(jnp.isfinite(x_TP), axis=1)
  finite_T = jnp.isfinite(loss_T) & all_finite(grads_TP) & all_finite(new_TP)
  trained_T = running_T & finite_T
  failed_T = running_T & ~finite_T
  step_T = slots.step + trained_T.astype(jnp.int32)
  status_T = jnp.where(failed_T, Status.FAILED, slots.status)
  status_T = jnp.where(trained_T & (step_T >= slots.total_steps), Status.DONE, status_T)
  if ttt_config.adaptive_stop_loss is not None:
    stop_T = trained_T & (loss_T < ttt_config.adaptive_stop_loss) & (status_T == Status.RUNNING)
    status_T = jnp.where(stop_T, Status.CONVERGED, status_T)
  # A failed slot keeps its last finite state, frozen; the scheduler hands out the job's
  # initial adapter (the base model) instead. Re-initialising here cost half the
  # step's compile time on a CPU, for a path almost never taken.
  lora = unflat_T(select_slots(trained_T, new_TP, lora_TP), slots.lora)
  opt_state = select_slots(trained_T, new_opt, slots.opt_state)

  slots = slots._replace(lora=lora, opt_state=opt_state, step=step_T, status=status_T)
  idle_zero = lambda x_T: jnp.where(running_T, x_T, 0.0)  # what a skipped slot reports
  metrics = {
      'loss': idle_zero(loss_T),
      'lr': lr_T,
      'grad_norm': idle_zero(jnp.linalg.norm(grads_TP, axis=1)),
      'tokens': jnp.sum(batch_T['mask'], axis=(1, 2)),
      'step': step_T,
      'status': status_T,
      'job': slots.job,
      'trained': trained_T,
      'finished': running_T & (status_T != Status.RUNNING),
  }
  return parallel.constrain(slots, mesh, parallel.TASK_SPEC), parallel.constrain(metrics, mesh, P())
