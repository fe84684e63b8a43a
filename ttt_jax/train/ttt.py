"""Stage 2: test-time training of one LoRA adapter per task, T tasks a step.

The frozen base params are shared; every per-task array carries a leading
task axis T ("slots"). One jitted `train_step` draws each slot's batch from
its own examples, computes `jax.vmap(value_and_grad(loss_one))` over the
slots (each task's gradient is exactly its own: the per-task losses are
independent, as if summed), and applies each slot's own clipped AdamW
update. Slots differ in their number of examples, so each carries its own
step count, schedule, epoch-wise shuffle and status; a finished, converged
or failed (NaN) slot is frozen. `train_stream` keeps the slots busy over a
long list of jobs (task x learning rate), handing out finished adapters and
placing the next job in the freed slot with a jitted, slot-indexed update.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tqdm import tqdm

from ttt_jax import checkpoint, parallel
from ttt_jax.data import arc, ttt_data
from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model import builtin, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora
from ttt_jax.train import optim

# Slot status codes.
RUNNING, DONE, CONVERGED, FAILED, EMPTY = 0, 1, 2, 3, 4
STATUS_NAMES = {
    RUNNING: 'running',
    DONE: 'done',
    CONVERGED: 'converged',
    FAILED: 'nan',
    EMPTY: 'empty',
}


@dataclasses.dataclass(frozen=True)
class TTTConfig:
  """Per-task adapter training; defaults are the paper's recipe (1B/3B)."""

  rank: int = 128
  alpha: float = 16.0
  targets: tuple[str, ...] = ('q', 'v', 'o', 'gate', 'up', 'down')
  rslora: bool = False
  lr: float = 5e-5
  epochs: int = 2
  batch_size: int = 2
  warmup_frac: float = 0.1
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_steps: int | None = None  # per-task cap on optimizer steps
  adaptive_stop_loss: float | None = None  # a task stops once its loss is below
  # LM head on at most this many target tokens per task batch (None: on every
  # position); must cover max_targets_per_batch of every task.
  loss_capacity: int | None = None
  seed: int = 0

  def __post_init__(self):
    for name in ('epochs', 'batch_size'):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f'TTTConfig.{name} must be positive, got {getattr(self, name)!r}')
    if not 0.0 <= self.warmup_frac < 1.0:
      raise ValueError(f'TTTConfig.warmup_frac must be in [0, 1), got {self.warmup_frac!r}')
    if self.loss_capacity is not None and self.loss_capacity <= 0:
      raise ValueError(
          f'TTTConfig.loss_capacity must be positive or None, got {self.loss_capacity!r}'
      )
    if self.max_steps is not None and self.max_steps <= 0:
      raise ValueError(f'TTTConfig.max_steps must be positive or None, got {self.max_steps!r}')
    # Validates rank / targets early, with LoraConfig's own messages.
    self.lora_config  # pylint: disable=pointless-statement

  @property
  def lora_config(self) -> LoraConfig:
    return LoraConfig(
        rank=self.rank, alpha=self.alpha, targets=tuple(self.targets), rslora=self.rslora
    )

  def optimizer(self) -> optax.GradientTransformation:
    return optim.make_optimizer(
        weight_decay=self.weight_decay,
        clip_norm=self.clip_norm,
        b1=self.b1,
        b2=self.b2,
        eps=self.eps,
    )


class Slots(NamedTuple):
  """Everything a slot trains with, each leaf with a leading axis T."""

  lora: Any  # adapter tree, [T, L, in, r] / [T, L, r, out]
  opt_state: Any  # per-task optax state
  step: Any  # int32 [T]: optimizer steps this slot's job has taken
  total_steps: Any  # int32 [T]: epochs * ceil(num_examples / batch), capped
  status: Any  # int32 [T]: RUNNING / DONE / CONVERGED / FAILED / EMPTY
  job: Any  # int32 [T]: index into the run's job list, -1 when empty
  task: Any  # int32 [T]: task index (which examples the slot holds)
  key: Any  # int32 [T]: the job's random stream: seeds adapter init and data order
  lr: Any  # float32 [T]: peak learning rate


# ----------------------------------------------------------------------------
# One task


def loss_one(
    base_params: Any,
    lora_t: Any,
    batch_t: dict,
    config: ModelConfig,
    lora_config: LoraConfig | None,
    loss_capacity: int | None = None,
) -> jax.Array:
  """Mean cross-entropy over one task's loss-masked target tokens (the base
  model alone when `lora_t` is None).

  batch_t: tokens [B, S] int32, mask [B, S] (real tokens), loss_mask [B, S]
  (token s is a target predicted from tokens < s).
  With `loss_capacity` C the LM head runs only on the hidden states of (at
  most C) target positions, gathered into a fixed [C, D] block, instead of all
  B x S; a batch with more than C targets gets a NaN loss (its slot fails)
  rather than a silently truncated one. `train_stream` checks the data first.
  """
  tokens_BS = jnp.asarray(batch_t['tokens'])
  h_BSD, _ = llama.hidden_states(
      base_params, tokens_BS, config, mask_BS=batch_t['mask'], lora=lora_t, lora_config=lora_config
  )
  h_ND = h_BSD[:, :-1].reshape(-1, h_BSD.shape[-1])  # position s predicts token s + 1
  targets_N = tokens_BS[:, 1:].reshape(-1)
  weights_N = jnp.asarray(batch_t['loss_mask'])[:, 1:].reshape(-1).astype(jnp.float32)
  total_weight = jnp.maximum(jnp.sum(weights_N), 1.0)
  if loss_capacity is None:
    return _weighted_ce(base_params, h_ND, targets_N, weights_N, config) / total_weight
  num_targets = jnp.sum(weights_N != 0)
  (rows_C,) = jnp.nonzero(weights_N != 0, size=loss_capacity, fill_value=0)
  weights_C = jnp.where(jnp.arange(loss_capacity) < num_targets, weights_N[rows_C], 0.0)
  loss = _weighted_ce(base_params, h_ND[rows_C], targets_N[rows_C], weights_C, config)
  return jnp.where(num_targets <= loss_capacity, loss / total_weight, jnp.nan)


def _weighted_ce(base_params, h_ND, targets_N, weights_N, config: ModelConfig) -> jax.Array:
  logits_NV = llama.logits_from_hidden(base_params, h_ND, config)
  ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NV, targets_N)
  return jnp.sum(ce_N * weights_N)


def max_targets_per_batch(loss_mask_NS: np.ndarray, batch_size: int) -> int:
  """An upper bound on the target tokens of any batch of `batch_size` rows."""
  per_row_N = np.count_nonzero(np.asarray(loss_mask_NS)[:, 1:], axis=1)
  return int(np.sort(per_row_N)[::-1][:batch_size].sum())


def task_key(seed: int, key) -> jax.Array:
  """The random stream of a job's `key` (run_ttt: a hash of the task id)."""
  return jax.random.fold_in(jax.random.key(seed), key)


def steps_per_epoch(num_examples, batch_size: int):
  return jnp.maximum((num_examples + batch_size - 1) // batch_size, 1)


def total_steps(num_examples, ttt_config: TTTConfig):
  total = ttt_config.epochs * steps_per_epoch(num_examples, ttt_config.batch_size)
  if ttt_config.max_steps is not None:
    total = jnp.minimum(total, ttt_config.max_steps)
  return total.astype(jnp.int32)


def epoch_order(key: jax.Array, num_examples, max_examples: int) -> jax.Array:
  """A permutation of [0, max_examples) with the valid examples first, shuffled."""
  scores_N = jax.random.uniform(key, (max_examples,))
  scores_N = jnp.where(jnp.arange(max_examples) < num_examples, scores_N, 2.0)
  return jnp.argsort(scores_N)


def draw_batch(data_t: TTTArrays, key, step, ttt_config: TTTConfig) -> dict:
  """The batch for `step` of one task: row i*B..i*B+B-1 of epoch e's shuffle.

  A short last batch repeats a valid example with zero loss weight, so the
  forward never sees an empty row and the mean is over real targets only.
  """
  max_examples, seq_len = data_t.tokens.shape
  batch = ttt_config.batch_size
  n = data_t.num_examples
  per_epoch = steps_per_epoch(n, batch)
  epoch, within = step // per_epoch, step % per_epoch
  epoch_key = jax.random.fold_in(jax.random.fold_in(task_key(ttt_config.seed, key), 1), epoch)
  order_N = epoch_order(epoch_key, n, max_examples)
  pos_B = within * batch + jnp.arange(batch)
  valid_B = pos_B < n
  rows_B = order_N[jnp.clip(pos_B, 0, jnp.maximum(n - 1, 0))]
  lengths_B = data_t.lengths[rows_B]
  return {
      'tokens': data_t.tokens[rows_B],
      'mask': jnp.arange(seq_len)[None, :] < lengths_B[:, None],
      'loss_mask': data_t.loss_mask[rows_B] * valid_B[:, None].astype(data_t.loss_mask.dtype),
  }


def init_adapter(key, model_config: ModelConfig, ttt_config: TTTConfig) -> Any:
  """A job's fresh adapter; a function of (seed, key) only, so any slot,
  restart, device count or task selection gives the same one."""
  return init_lora(
      jax.random.fold_in(task_key(ttt_config.seed, key), 0), model_config, ttt_config.lora_config
  )


def update_one(lora_t, opt_state_t, grads_t, step, total, peak_lr, tx, warmup_frac):
  """One task's clipped AdamW update at its own scheduled learning rate."""
  lr = peak_lr * optim.warmup_cosine(step, total, warmup_frac)
  opt_state_t = optim.with_hyperparams(opt_state_t, learning_rate=lr)
  updates, opt_state_t = tx.update(grads_t, opt_state_t, lora_t)
  return optax.apply_updates(lora_t, updates), opt_state_t, lr


# ----------------------------------------------------------------------------
# T tasks


def _select(mask_T, new, old):
  """Per-slot choice between two trees with a leading T axis."""

  def one(n, o):
    return jnp.where(mask_T.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

  return jax.tree.map(one, new, old)


def _all_finite_T(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1) for x in jax.tree.leaves(tree)]
  return functools.reduce(jnp.logical_and, leaves)


def _constrain(tree, mesh: Mesh | None, spec: P):
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))


def fresh_slot_states(key_T, model_config: ModelConfig, ttt_config: TTTConfig):
  """Initial (adapter, optimizer state) of each slot's job."""
  lora_T = jax.vmap(lambda k: init_adapter(k, model_config, ttt_config))(key_T)
  return lora_T, optim.init_task_states(ttt_config.optimizer(), lora_T)


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

  Returns the new slots and per-slot metrics [T]: loss, lr, grad_norm, step,
  status, job, trained (the update was applied), finished (stopped this step).
  """
  tx = ttt_config.optimizer()
  batch_T = jax.vmap(draw_batch, in_axes=(0, 0, 0, None))(data, slots.key, slots.step, ttt_config)
  loss_and_grad_one = jax.value_and_grad(loss_one, argnums=1)
  loss_T, grads_T = jax.vmap(loss_and_grad_one, in_axes=(None, 0, 0, None, None, None))(
      base_params,
      slots.lora,
      batch_T,
      model_config,
      ttt_config.lora_config,
      ttt_config.loss_capacity,
  )
  new_lora, new_opt, lr_T = jax.vmap(update_one, in_axes=(0, 0, 0, 0, 0, 0, None, None))(
      slots.lora,
      slots.opt_state,
      grads_T,
      slots.step,
      slots.total_steps,
      slots.lr,
      tx,
      ttt_config.warmup_frac,
  )

  running_T = slots.status == RUNNING
  finite_T = jnp.isfinite(loss_T) & _all_finite_T(grads_T) & _all_finite_T(new_lora)
  trained_T = running_T & finite_T
  failed_T = running_T & ~finite_T
  step_T = slots.step + trained_T.astype(jnp.int32)
  status_T = jnp.where(failed_T, FAILED, slots.status)
  status_T = jnp.where(trained_T & (step_T >= slots.total_steps), DONE, status_T)
  if ttt_config.adaptive_stop_loss is not None:
    converged_T = trained_T & (loss_T < ttt_config.adaptive_stop_loss) & (status_T == RUNNING)
    status_T = jnp.where(converged_T, CONVERGED, status_T)
  lora = _select(trained_T, new_lora, slots.lora)
  opt_state = _select(trained_T, new_opt, slots.opt_state)

  # A failed slot goes back to its initial adapter and optimizer state; the
  # cond keeps the re-initialisation off the common path.
  def reset_failed(lora_and_opt):
    return _select(failed_T, fresh_slot_states(slots.key, model_config, ttt_config), lora_and_opt)

  lora, opt_state = jax.lax.cond(jnp.any(failed_T), reset_failed, lambda x: x, (lora, opt_state))

  slots = slots._replace(lora=lora, opt_state=opt_state, step=step_T, status=status_T)
  metrics = {
      'loss': loss_T,
      'lr': lr_T,
      'grad_norm': jax.vmap(optax.global_norm)(grads_T),
      'step': step_T,
      'status': status_T,
      'job': slots.job,
      'trained': trained_T,
      'finished': running_T & (status_T != RUNNING),
  }
  return _constrain(slots, mesh, parallel.TASK_SPEC), _constrain(metrics, mesh, P())


@functools.partial(jax.jit, static_argnames=('model_config', 'ttt_config'))
def fresh_slot(
    task, key, job, lr, num_examples, *, model_config: ModelConfig, ttt_config: TTTConfig
) -> Slots:
  """One slot's state (no T axis) for a job at its start."""
  key = jnp.asarray(key, jnp.int32)
  lora_t, opt_t = jax.tree.map(
      lambda x: x[0], fresh_slot_states(key[None], model_config, ttt_config)
  )
  return Slots(
      lora=lora_t,
      opt_state=opt_t,
      step=jnp.int32(0),
      total_steps=total_steps(num_examples, ttt_config),
      status=jnp.int32(RUNNING),
      job=jnp.asarray(job, jnp.int32),
      task=jnp.asarray(task, jnp.int32),
      key=key,
      lr=jnp.asarray(lr, jnp.float32),
  )


@functools.partial(jax.jit, static_argnames=('mesh',), donate_argnames=('tree',))
def put_slot(tree: Any, slot, one: Any, mesh: Mesh | None = None) -> Any:
  """`tree[slot] = one` leaf by leaf; `slot` is an array, so one compilation
  serves every slot."""
  tree = jax.tree.map(lambda full, x: full.at[slot].set(jnp.asarray(x, full.dtype)), tree, one)
  return _constrain(tree, mesh, parallel.TASK_SPEC)


def place_job(
    slots: Slots,
    data: TTTArrays,
    slot: int,
    task_data: TTTArrays,
    task: int,
    job: int,
    lr: float,
    *,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    mesh: Mesh | None = None,
    key: int | None = None,
) -> tuple[Slots, TTTArrays]:
  """Starts `job` (task `task` at peak lr `lr`) in slot `slot` with a fresh
  adapter and optimizer state; `task_data` is that task's [N, S] arrays.
  `key` seeds the adapter init and data order (default: the task index)."""
  one = fresh_slot(
      task,
      task if key is None else key,
      job,
      lr,
      task_data.num_examples,
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
) -> tuple[Slots, TTTArrays]:
  """All-EMPTY slots (zeros) of the right shapes, created on device, sharded."""

  def make():
    task_T = jnp.zeros((num_slots,), jnp.int32)
    lora, opt_state = fresh_slot_states(task_T, model_config, ttt_config)
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    slots = Slots(
        lora=zeros(lora),
        opt_state=zeros(opt_state),
        step=task_T,
        total_steps=task_T,
        status=jnp.full((num_slots,), EMPTY, jnp.int32),
        job=task_T - 1,
        task=task_T,
        key=task_T,
        lr=jnp.zeros((num_slots,), jnp.float32),
    )
    data = TTTArrays(
        tokens=jnp.zeros((num_slots, max_examples, seq_len), jnp.int32),
        loss_mask=jnp.zeros((num_slots, max_examples, seq_len), jnp.int32),
        lengths=jnp.zeros((num_slots, max_examples), jnp.int32),
        num_examples=task_T,
    )
    return slots, data

  if mesh is None:
    return jax.jit(make)()
  parallel.task_sharding(mesh, num_slots)  # checks divisibility
  return jax.jit(make, out_shardings=NamedSharding(mesh, parallel.TASK_SPEC))()


@functools.partial(jax.jit, static_argnames=('mesh',))
def _gather_slot(tree: Any, slot, mesh: Mesh | None) -> Any:
  return _constrain(jax.tree.map(lambda x: x[slot], tree), mesh, P())


def take_slot(tree: Any, slot: int, mesh: Mesh | None = None) -> Any:
  """One slot's leaves as host numpy arrays (replicated first, so this also
  works when the slot lives on another host)."""
  return jax.device_get(_gather_slot(tree, jnp.int32(slot), mesh))


# ----------------------------------------------------------------------------
# Streaming many jobs through the slots


@dataclasses.dataclass(frozen=True)
class Job:
  """Train an adapter for task `task` (an index into the run's tasks) at peak lr `lr`;
  `key` seeds its adapter init and data order (None: the task index)."""

  task: int
  lr: float
  key: int | None = None


@dataclasses.dataclass(frozen=True)
class JobResult:
  job: int
  task: int
  lr: float
  status: str  # 'done' | 'converged' | 'nan' | 'no_examples'
  steps: int
  losses: tuple[float | None, ...]  # one per step run (None where not finite)
  seconds: float  # wall time from placement to finish


def _fingerprint(jobs, model_config, ttt_config, num_slots, max_examples, seq_len) -> str:
  return json.dumps(
      [
          [(j.task, j.lr, j.key) for j in jobs],
          repr(model_config),
          repr(ttt_config),
          num_slots,
          max_examples,
          seq_len,
      ]
  )


def train_stream(
    base_params: Any,
    jobs: Sequence[Job],
    task_data: Callable[[int], TTTArrays],
    *,
    model_config: ModelConfig,
    ttt_config: TTTConfig,
    num_slots: int,
    max_examples: int,
    seq_len: int,
    mesh: Mesh | None = None,
    on_job_done: Callable[[JobResult, Any], None] | None = None,
    checkpointer=None,
    stop_after_steps: int | None = None,
    finished: dict[int, JobResult] | None = None,
) -> list[JobResult]:
  """Trains every job's adapter, `num_slots` at a time, and returns their results.

  `task_data(task)` gives one task's arrays shaped [max_examples, seq_len].
  `on_job_done(result, lora_t)` receives each finished adapter as host numpy
  (None for a task with no examples), exactly once per run, but possibly
  again after a resume for jobs finished after the last checkpoint.
  With a `checkpointer` (checkpoint.RunCheckpointer) the run saves every
  `save_every` global steps and resumes from the latest save.
  `stop_after_steps` stops after that many global steps without saving
  (what a killed run leaves behind; for tests). `finished` holds jobs an
  earlier run already finished and handed out (by job index): they are not
  trained again, their results are passed through (`on_job_done(result, None)`).

  The host dispatches step N before reading step N-1's metrics, so the device
  is never idle waiting on the host, except at checkpoints and when a job
  finishes (its adapter is read back and the slot refilled).
  """
  jobs = list(jobs)
  on_job_done = on_job_done or (lambda result, lora_t: None)
  finished = finished or {}
  statics = dict(model_config=model_config, ttt_config=ttt_config)
  slots, data = empty_slots(num_slots, max_examples, seq_len, model_config, ttt_config, mesh)
  host = {
      'global_step': 0,
      'next_job': 0,
      'losses': {},
      'started': {},
      'done': [],
      'fingerprint': _fingerprint(jobs, model_config, ttt_config, num_slots, max_examples, seq_len),
  }

  def arrays_of(task: int) -> TTTArrays:
    arrays = TTTArrays(*(np.asarray(x) for x in task_data(task)))
    if arrays.tokens.shape != (max_examples, seq_len) or arrays.lengths.shape != (max_examples,):
      raise ValueError(
          f'task_data({task}): tokens {arrays.tokens.shape}, lengths '
          f'{arrays.lengths.shape}; expected ({max_examples}, {seq_len}), '
          f'({max_examples},)'
      )
    capacity, needed = ttt_config.loss_capacity, max_targets_per_batch(
        arrays.loss_mask, ttt_config.batch_size
    )
    if capacity is not None and needed > capacity:
      raise ValueError(
          f'task_data({task}): a batch can hold {needed} target tokens, more than '
          f'TTTConfig.loss_capacity={capacity}'
      )
    return arrays

  def finish(result: JobResult, lora_t: Any) -> None:
    host['done'].append(dataclasses.asdict(result))
    on_job_done(result, lora_t)

  def refill(slot: int) -> bool:
    """Places the next job with examples in `slot`; False when none is left."""
    nonlocal slots, data
    while host['next_job'] < len(jobs):
      index = host['next_job']
      host['next_job'] += 1
      if index in finished:
        finish(finished[index], None)
        continue
      job, arrays = jobs[index], arrays_of(jobs[index].task)
      if int(arrays.num_examples) == 0:
        finish(JobResult(index, job.task, job.lr, 'no_examples', 0, (), 0.0), None)
        continue
      slots, data = place_job(
          slots, data, slot, arrays, job.task, index, job.lr, mesh=mesh, key=job.key, **statics
      )
      host['started'][str(index)] = time.time()
      host['losses'][str(index)] = []
      return True
    return False

  def collect(metrics: dict) -> None:
    """Records one step's losses; hands out finished jobs and refills their slots."""
    m = jax.device_get(metrics)
    for slot in np.flatnonzero(m['trained'] | m['finished']):
      loss = float(m['loss'][slot])
      host['losses'][str(int(m['job'][slot]))].append(loss if np.isfinite(loss) else None)
    for slot in np.flatnonzero(m['finished']):
      index = int(m['job'][slot])
      lora_t = take_slot(slots.lora, int(slot), mesh)
      losses = host['losses'].pop(str(index))
      result = JobResult(
          index,
          jobs[index].task,
          jobs[index].lr,
          STATUS_NAMES[int(m['status'][slot])],
          int(m['step'][slot]),
          tuple(losses),
          time.time() - host['started'].pop(str(index)),
      )
      running.discard(int(slot))
      finish(result, lora_t)
      if refill(int(slot)):
        running.add(int(slot))

  latest = checkpointer.latest_step() if checkpointer is not None else None
  if latest is not None:
    slots, host = checkpointer.restore(latest, slots)
    if host['fingerprint'] != _fingerprint(
        jobs, model_config, ttt_config, num_slots, max_examples, seq_len
    ):
      raise ValueError(
          f'checkpoint step {latest} in {checkpointer.manager.directory} is of a '
          'different run (jobs, model, TTT config or slot shapes differ); '
          'use a fresh workdir'
      )
    status, task = jax.device_get((slots.status, slots.task))
    running = {int(s) for s in np.flatnonzero(status == RUNNING)}
    for slot in sorted(running):
      data = put_slot(data, jnp.int32(slot), arrays_of(int(task[slot])), mesh=mesh)
    logging.info(
        'resumed TTT from step %d: %d jobs done, %d running',
        latest,
        len(host['done']),
        len(running),
    )
  else:
    running = set()
    for slot in range(num_slots):
      if refill(slot):
        running.add(slot)

  pending = None
  while running or pending is not None:
    metrics = None
    if running:
      slots, metrics = train_step(base_params, slots, data, mesh=mesh, **statics)
      host['global_step'] += 1
    if pending is not None:
      collect(pending)
    pending = metrics
    if stop_after_steps is not None and host['global_step'] >= stop_after_steps:
      break
    if (
        metrics is not None
        and checkpointer is not None
        and checkpointer.should_save(host['global_step'])
    ):
      collect(pending)
      pending = None
      checkpointer.save(host['global_step'], slots, host)
  if checkpointer is not None:
    checkpointer.close()
  return [JobResult(**{**r, 'losses': tuple(r['losses'])}) for r in host['done']]


# ----------------------------------------------------------------------------
# A whole run from a config: launch/ttt.py calls this


def ttt_config_from(cfg) -> TTTConfig:
  """TTTConfig from the `ttt` block of a ConfigDict (or any mapping)."""
  fields = {f.name for f in dataclasses.fields(TTTConfig)}
  values = dict(cfg)
  unknown = set(values) - fields
  if unknown:
    raise ValueError(f'config.ttt has unknown fields {sorted(unknown)}; known: {sorted(fields)}')
  if 'targets' in values:
    values['targets'] = tuple(values['targets'])
  return TTTConfig(**values)


def load_base_model(model_cfg, *, warn_random: bool = True) -> tuple[ModelConfig, Any, str | None]:
  """(config, params, checkpoint dir or None) from the `model` config block."""
  config, params = builtin.load_model(
      model_cfg.checkpoint_dir,
      preset=model_cfg.preset,
      init_seed=model_cfg.init_seed,
      warn_random=warn_random,
      param_dtype=model_cfg.param_dtype,
      compute_dtype=model_cfg.compute_dtype,
      remat=model_cfg.remat,
  )
  return config, params, builtin.resolve(model_cfg.checkpoint_dir) or None


def read_finished(metrics_path: str, jobs: Sequence[Job]) -> dict[int, JobResult]:
  """{job index: result} of the jobs an earlier run logged in ttt_metrics.jsonl (their
  adapters were exported before the line was written); they must be this run's jobs."""
  fields = {f.name for f in dataclasses.fields(JobResult)}
  finished = {}
  for record in checkpoint.read_log(metrics_path):
    result = JobResult(**{k: v for k, v in record.items() if k in fields})
    index = result.job
    if index >= len(jobs) or (jobs[index].task, jobs[index].lr) != (result.task, result.lr):
      raise ValueError(
          f'{metrics_path}: job {index} (task {result.task}, lr {result.lr}) is '
          'not a job of this run (other tasks or lrs?); use a fresh workdir'
      )
    finished[index] = dataclasses.replace(result, losses=tuple(result.losses))
  return finished


def run_ttt(config, workdir: str) -> list[JobResult]:
  """Test-time training of every selected task (x every learning rate).

  Writes workdir/adapters/<task_id>/ (PEFT format; <task_id>/lr_<lr>/ when
  sweeping several lrs), workdir/ttt_metrics.jsonl (one line per job: status,
  steps, loss curve, seconds) and resumable checkpoints in workdir/checkpoints.
  A rerun in the same workdir trains only the jobs not yet in ttt_metrics.jsonl
  (from the last checkpoint, if any).
  """
  parallel.initialize_distributed(
      config.run.distributed,
      config.run.coordinator_address or None,
      config.run.num_processes,
      config.run.process_id,
  )
  ttt_config = ttt_config_from(config.ttt)
  model_config, params, model_dir = load_base_model(config.model)
  mesh = parallel.make_mesh(tuple(tuple(a) for a in config.run.mesh))
  params = parallel.shard_params(params, mesh)

  tasks, _ = arc.load_tasks(config.data.selector)  # logs what it loaded and skipped
  if not tasks:
    raise ValueError(f'config.data.selector {config.data.selector!r} selected no valid tasks')
  data_config = ttt_data.TTTDataConfig(
      max_examples=config.data.max_examples,
      max_tokens=config.data.seq_len,
      augmentations_per_task=config.data.augmentations_per_task,
      loss=config.data.loss,
      leave_two_out=config.data.leave_two_out,
      train_only_prob=config.data.train_only_prob,
      d8=config.data.d8,
      colors=config.data.colors,
      shuffle_order=config.data.shuffle_order,
  )
  lrs = tuple(config.run.lrs) or (ttt_config.lr,)
  # Each task's random stream (adapter init, data order, augmentations) comes from its id,
  # so a task's adapter does not depend on which other tasks the run selects.
  task_seeds = [zlib.crc32(t.id.encode()) & 0x7FFFFFFF for t in tasks]
  jobs = [Job(task=t, lr=float(lr), key=task_seeds[t]) for t in range(len(tasks)) for lr in lrs]

  @functools.lru_cache(maxsize=2 * len(lrs))
  def task_data(t: int) -> TTTArrays:
    examples, _ = ttt_data.build_ttt_examples(
        tasks[t], data_config, task_seeds[t] ^ ttt_config.seed
    )
    packed = ttt_data.pack_tasks([examples], data_config.max_examples, config.data.seq_len)
    return TTTArrays(*(x[0] for x in packed))

  os.makedirs(workdir, exist_ok=True)
  writer = jax.process_index() == 0
  metrics_path = os.path.join(workdir, 'ttt_metrics.jsonl')
  finished = read_finished(metrics_path, jobs)
  logged = set(finished)
  if finished:
    logging.info(
        'Resuming: %d of %d jobs already finished in %s', len(finished), len(jobs), metrics_path
    )
  progress = tqdm(total=len(jobs), desc='TTT jobs', disable=not writer)

  def on_job_done(result: JobResult, lora_t) -> None:
    progress.update(1)
    if not writer or result.job in logged:
      return
    task_id = tasks[result.task].id
    if lora_t is not None:
      out = os.path.join(workdir, 'adapters', task_id)
      if len(lrs) > 1:
        out = os.path.join(out, f'lr_{result.lr:g}')
      checkpoint.export_peft_adapter(
          out, lora_t, ttt_config.lora_config, model_config, base_model_name_or_path=model_dir
      )
    with checkpoint.open_log(metrics_path) as f:
      f.write(json.dumps({'task_id': task_id, **dataclasses.asdict(result)}) + '\n')
    logged.add(result.job)

  checkpointer = None
  if config.run.checkpoint_every:
    checkpointer = checkpoint.RunCheckpointer(
        os.path.join(workdir, 'checkpoints'), config.run.checkpoint_every
    )
  results = train_stream(
      params,
      jobs,
      task_data,
      model_config=model_config,
      ttt_config=ttt_config,
      num_slots=config.run.num_slots,
      max_examples=data_config.max_examples,
      seq_len=config.data.seq_len,
      mesh=mesh,
      on_job_done=on_job_done,
      checkpointer=checkpointer,
      finished=finished,
  )
  progress.close()
  counts = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  logging.info(
      'TTT finished %d jobs: %s; adapters in %s',
      len(results),
      counts,
      os.path.join(workdir, 'adapters'),
  )
  return results
