"""Stage 1: fine-tuning the base model on ARC-like tasks (full, or LoRA).

`train(config, workdir)` trains all params (from scratch with
`llama.init_params`, or from an HF checkpoint dir), or only a LoRA adapter
on a frozen base, on `pretrain_data.PretrainStream` batches: AdamW with
linear warmup + cosine decay and global-norm clipping, one jitted step with
donated buffers. Every `checkpoint_every` steps and at the end: an orbax
checkpoint (trainable params + optimizer state; the data position is the
step itself) and an HF export in workdir/hf/. A rerun with the same workdir
resumes from the latest checkpoint that restores (a torn one is skipped) and
reproduces the uninterrupted run; one run per workdir at a time (run_lock.py).
Metrics go to workdir/metrics.jsonl (one JSON object per line).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from ttt_jax import checkpoint
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.data.format import round_up
from ttt_jax.data import prefetch, pretrain_data
from ttt_jax.errors import UserError, blame
from ttt_jax.formats.base import Format
from ttt_jax.formats.chat import copy_tokenizer_files
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import decode
from ttt_jax.metric_writer import MetricWriter
from ttt_jax.model import builtin, hf
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora, merge_lora
from ttt_jax.run_lock import RunLock
from ttt_jax.train.loss import loss_one

METRICS_FILE = 'metrics.jsonl'


# ----------------------------------------------------------------------------
# Config pieces


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Stage 1's optimizer: global-norm clip -> AdamW on linear warmup + cosine decay."""

  lr: float = 1e-3
  warmup_steps: int = 20
  end_lr_frac: float = 0.1  # the cosine ends at lr * end_lr_frac
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8


@dataclasses.dataclass(frozen=True)
class TrainingTasks:
  """Where stage 1's tasks come from (the `data` block's keys besides the stream's)."""

  train: tuple[str, ...] = ('arc1/train',)  # task selectors (ttt_jax/data/arc.py)
  contamination_guard: str = 'arc1/eval'  # drop training tasks sharing a pair with these
  val_frac: float = 0.05  # held-out tasks for validation, split by task id
  val_max_examples: int = 8


@dataclasses.dataclass(frozen=True)
class FinetuneRun:
  """A configs/finetune.py ConfigDict as frozen dataclasses (errors name the bad flag)."""

  model: builtin.ModelSpec
  stream: pretrain_data.PretrainDataConfig
  tasks: TrainingTasks
  optim: OptimConfig
  lora: LoraConfig | None  # None: full fine-tuning

  @classmethod
  def from_config(cls, config) -> FinetuneRun:
    task_fields = [f.name for f in dataclasses.fields(TrainingTasks)]
    stream_fields = [f.name for f in dataclasses.fields(pretrain_data.PretrainDataConfig)]
    data = config.data
    return cls(
        model=from_config_dict(builtin.ModelSpec, config.model, where='config.model'),
        stream=from_config_dict(
            pretrain_data.PretrainDataConfig, data, where='config.data', exclude=task_fields
        ),
        tasks=from_config_dict(TrainingTasks, data, where='config.data', exclude=stream_fields),
        optim=from_config_dict(OptimConfig, config.optim, where='config.optim'),
        lora=(
            from_config_dict(LoraConfig, config.lora, where='config.lora', exclude=('enabled',))
            if config.lora.enabled
            else None
        ),
    )


def make_optimizer(
    o: OptimConfig, steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(global-norm clip -> AdamW on a warmup + cosine schedule, the schedule).
  Norm weights are not decayed."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=o.lr / max(o.warmup_steps, 1),
      peak_value=o.lr,
      warmup_steps=o.warmup_steps,
      decay_steps=max(steps, o.warmup_steps + 1),
      end_value=o.lr * o.end_lr_frac,
  )
  decay_mask = lambda tree: jax.tree_util.tree_map_with_path(
      lambda path, _: not str(path[-1].key).endswith('norm'), tree
  )
  return (
      optax.chain(
          optax.clip_by_global_norm(o.clip_norm),
          optax.adamw(
              schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask
          ),
      ),
      schedule,
  )


# ----------------------------------------------------------------------------
# The step


def loss_fn(
    trainable: Any,
    frozen: Any,
    batch: dict,
    model_config: ModelConfig,
    lora_config: LoraConfig | None,
) -> jax.Array:
  """Mean CE over target tokens; `trainable` is the params, or the adapter."""
  if lora_config is None:
    return loss_one(trainable, None, batch, model_config, None)
  return loss_one(frozen, trainable, batch, model_config, lora_config)


@functools.partial(
    jax.jit, static_argnames=('model_config', 'lora_config', 'tx'), donate_argnums=(0,)
)
def train_step(
    state: dict,
    frozen: Any,
    batch: dict,
    *,
    model_config: ModelConfig,
    lora_config: LoraConfig | None,
    tx: optax.GradientTransformation,
) -> tuple[dict, dict]:
  """state = {'params' (trainable), 'opt_state', 'step'} -> (new state, metrics)."""
  loss, grads = jax.value_and_grad(loss_fn)(
      state['params'], frozen, batch, model_config, lora_config
  )
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  metrics = {
      'loss': loss,
      'grad_norm': optax.tree.norm(grads),
      'tokens': jnp.sum(batch['mask']),
      'targets': jnp.sum(batch['loss_mask'][:, 1:]),
  }
  return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics


@functools.partial(jax.jit, static_argnames=('model_config', 'lora_config'))
def eval_loss_sums(trainable, frozen, batch, *, model_config, lora_config):
  """(sum of target CE, number of targets) of one batch."""
  n = jnp.sum(batch['loss_mask'][:, 1:])
  return loss_fn(trainable, frozen, batch, model_config, lora_config) * n, n


# ----------------------------------------------------------------------------
# Validation


def full_params(state_params, frozen, lora_config: LoraConfig | None):
  return state_params if lora_config is None else merge_lora(frozen, state_params, lora_config)


def validate(
    params: Any,
    model_config: ModelConfig,
    examples: list[dict],
    batch_size: int,
    max_len: int,
    fmt: Format = COMPACT,
) -> dict:
  """Validation loss over the held-out test outputs and greedy exact match."""
  if not examples:
    return {}
  loss_sum, count, solved = 0.0, 0, 0
  for start in range(0, len(examples), batch_size):
    chunk = examples[start : start + batch_size]
    pad = lambda rows: pretrain_data.pad_batch(rows, 128, max_len, fmt.pad_id)
    batch = pad([(e['tokens'], e['loss_mask']) for e in chunk])
    s, n = eval_loss_sums(params, None, batch, model_config=model_config, lora_config=None)
    loss_sum, count = loss_sum + float(s), count + int(n)
    prompts = pad([(e['prompt'], np.zeros_like(e['prompt'])) for e in chunk])
    longest_output = max(fmt.answer_tokens(e['output'].shape) for e in chunk)
    out = decode.generate(
        params,
        model_config,
        prompts['tokens'],
        prompts['mask'].sum(1),
        max_new_tokens=round_up(longest_output, 64),
        stop_ids=fmt.stop_ids,
        pad_id=fmt.pad_id,
    )
    for e, row in zip(chunk, np.asarray(out.tokens_BN)):
      grid = fmt.parse_answer(row)
      solved += grid is not None and np.array_equal(grid, e['output'])
  return {
      'val_loss': loss_sum / max(count, 1),
      'val_exact': solved / len(examples),
      'val_examples': len(examples),
  }


# ----------------------------------------------------------------------------
# The run


def train(
    config,
    workdir: str,
    *,
    stop_after: int | None = None,
    deadline: float | None = None,
    data_workers: int = 0,
) -> dict:
  """Fine-tunes per `config` (configs/finetune.py); returns the final state and
  host counters. `stop_after` ends the run early after that step, as a kill
  would (no final checkpoint beyond the regular ones): for tests and time boxes.
  `deadline` (a time.monotonic() value) ends it after the first step past it as the
  last step would end it: validation, checkpoint and export (a time-budgeted run,
  its lr schedule sized for config.steps). `data_workers` processes make the batches ahead
  (data/prefetch.py: the same batches; for a GPU, which a 2-core host cannot keep busy)."""
  with RunLock(workdir):  # one run per workdir: a second is refused
    return _train(config, workdir, stop_after, deadline, data_workers)


def _train(config, workdir: str, stop_after, deadline, data_workers) -> dict:
  c = FinetuneRun.from_config(config)
  if c.model.quantize:
    raise UserError('--config.model.quantize: stage 1 trains the base weights; quantize for TTT')
  # No checkpoint: training from scratch is the point, not a warning.
  with blame('config.model.checkpoint_dir'):
    model_config, base_params, model_dir = builtin.load_base_model(c.model, warn_random=False)
  with blame('config.model.format'):
    fmt = builtin.load_format(c.model, model_config)
  with blame('config.data.train'):
    tasks, report = pretrain_data.load_training_tasks(c.tasks.train, c.tasks.contamination_guard)
  train_tasks, val_tasks = pretrain_data.split_tasks(tasks, c.tasks.val_frac, config.seed)
  stream = pretrain_data.PretrainStream(train_tasks, c.stream, fmt)
  val_examples, val_too_long = pretrain_data.validation_examples(
      val_tasks, c.stream, c.tasks.val_max_examples, fmt
  )
  logging.info(
      'tasks: %s; train %d (%d too long), validation %d tasks / %d examples (%d too long)',
      report,
      len(stream.tasks),
      stream.num_unfit_tasks,
      len(val_tasks),
      len(val_examples),
      val_too_long,
  )

  tx, schedule = make_optimizer(c.optim, config.steps)
  if c.lora is None:
    trainable, frozen = base_params, None
  else:
    trainable = init_lora(jax.random.key(config.seed), model_config, c.lora)
    frozen = base_params
  state = {'params': trainable, 'opt_state': tx.init(trainable), 'step': jnp.int32(0)}
  host = {'tokens_seen': 0, 'targets_seen': 0}

  checkpointer = checkpoint.RunCheckpointer(
      os.path.join(workdir, 'checkpoints'), config.checkpoint_every
  )
  metrics_path = os.path.join(workdir, METRICS_FILE)
  start = 0
  restored = checkpointer.restore_latest(state)  # a torn step is skipped: the one before
  if restored is not None:
    start, state, host = restored
    logging.info('resuming from step %d', start)
  checkpoint.drop_records_after(metrics_path, start)  # what a killed run logged past it
  scalars = MetricWriter(workdir)

  def log(record: dict, prefix: str) -> None:
    checkpoint.append_record(metrics_path, record)
    scalars.write(record['step'], {k: v for k, v in record.items() if k != 'step'}, prefix)

  def save(step: int) -> None:
    checkpointer.save(step, state, host)
    hf.save_hf(
        os.path.join(workdir, 'hf'),
        model_config,
        jax.device_get(full_params(state['params'], frozen, c.lora)),
    )
    builtin.write_sidecar(os.path.join(workdir, 'hf'), model_config)  # e.g. grid positions
    if model_dir:  # a text format needs the tokenizer beside the weights
      copy_tokenizer_files(model_dir, os.path.join(workdir, 'hf'))

  step_fn = functools.partial(train_step, model_config=model_config, lora_config=c.lora, tx=tx)
  last = config.steps if stop_after is None else min(config.steps, stop_after)
  progress = tqdm(range(start, last), initial=start, total=config.steps, desc='finetune')
  window_tokens, window_start = 0, time.perf_counter()  # tokens/s over the logging window
  batches = prefetch.batches(stream, start, last, data_workers)
  for step, batch in zip(progress, batches):
    state, metrics = step_fn(state, frozen, batch)
    metrics = jax.device_get(metrics)
    host['tokens_seen'] += int(metrics['tokens'])
    host['targets_seen'] += int(metrics['targets'])
    window_tokens += int(metrics['tokens'])
    done = step + 1
    out_of_time = deadline is not None and time.monotonic() > deadline
    final = done == config.steps or out_of_time
    if done % config.log_every == 0 or done == last or out_of_time:
      record = {
          'step': done,
          'loss': float(metrics['loss']),
          'grad_norm': float(metrics['grad_norm']),
          'lr': float(schedule(step)),
          'tokens_per_s': window_tokens / (time.perf_counter() - window_start),
          'tokens_seen': host['tokens_seen'],
          'targets_seen': host['targets_seen'],
      }
      log(record, 'train')
      progress.set_postfix(loss=f'{record["loss"]:.3f}', tok_s=f'{record["tokens_per_s"]:.0f}')
      window_tokens, window_start = 0, time.perf_counter()
    if val_examples and config.eval_every and (done % config.eval_every == 0 or final):
      params = full_params(state['params'], frozen, c.lora)
      record = {
          'step': done,
          **validate(
              params, model_config, val_examples, c.stream.batch_size, c.stream.max_len, fmt
          ),
      }
      log(record, 'validation')
      logging.info('validation: %s', record)
    if done % config.checkpoint_every == 0 or final:
      save(done)
    if out_of_time:
      logging.info('deadline passed: stopping after step %d of %d', done, config.steps)
      break
  progress.close()
  batches.close()  # ends the workers
  checkpointer.close()
  scalars.close()
  logging.info('stream stats (of this process, not its data workers): %s', stream.stats)
  return {'state': state, 'host': host, 'model_config': model_config}
