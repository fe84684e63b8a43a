"""Stage 1: fine-tuning the base model on ARC-like tasks (full, or LoRA).

`train(config, workdir)` trains all params (from scratch with
`llama.init_params`, or from an HF checkpoint dir), or only a LoRA adapter
on a frozen base, on `pretrain_data.PretrainStream` batches: AdamW with
linear warmup + cosine decay and global-norm clipping, one jitted step with
donated buffers. Every `checkpoint_every` steps and at the end: an orbax
checkpoint (trainable params + optimizer state; the data position is the
step itself) and an HF export in workdir/hf/. A rerun with the same workdir
resumes from the latest checkpoint and reproduces the uninterrupted run.
Metrics go to workdir/metrics.jsonl (one JSON object per line).
"""

from __future__ import annotations

import functools
import json
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
from ttt_jax.data import format as fmt
from ttt_jax.data import pretrain_data
from ttt_jax.model import hf, kv_cache
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora, merge_lora
from ttt_jax.train import optim
from ttt_jax.train.ttt import load_base_model, loss_one

METRICS_FILE = 'metrics.jsonl'


# ----------------------------------------------------------------------------
# Config pieces


def data_config_from(config) -> pretrain_data.PretrainDataConfig:
  d = config.data
  return pretrain_data.PretrainDataConfig(
      max_len=d.max_len,
      batch_size=d.batch_size,
      loss=d.loss,
      min_demos=d.min_demos,
      d8=d.d8,
      colors=d.colors,
      shuffle_order=d.shuffle_order,
      variant_prob=d.variant_prob,
      train_only_prob=d.train_only_prob,
      bucket_steps=d.bucket_steps,
      pad_multiple=d.pad_multiple,
      seed=config.seed,
  )


def lora_config_from(config) -> LoraConfig | None:
  if not config.lora.enabled:
    return None
  return LoraConfig(
      rank=config.lora.rank,
      alpha=config.lora.alpha,
      targets=tuple(config.lora.targets),
      rslora=config.lora.rslora,
  )


def make_optimizer(o, steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
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
      'grad_norm': optax.global_norm(grads),
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
    params: Any, model_config: ModelConfig, examples: list[dict], batch_size: int, max_len: int
) -> dict:
  """Validation loss over the held-out test outputs and greedy exact match."""
  if not examples:
    return {}
  loss_sum, count, solved = 0.0, 0, 0
  for start in range(0, len(examples), batch_size):
    chunk = examples[start : start + batch_size]
    batch = pretrain_data.pad_batch([(e['tokens'], e['loss_mask']) for e in chunk], 128, max_len)
    s, n = eval_loss_sums(params, None, batch, model_config=model_config, lora_config=None)
    loss_sum, count = loss_sum + float(s), count + int(n)
    prompts = pretrain_data.pad_batch(
        [(e['prompt'], np.zeros_like(e['prompt'])) for e in chunk], 128, max_len
    )
    longest_output = max(len(fmt.grid_to_tokens(e['output'])) + 1 for e in chunk)
    new_tokens, _ = kv_cache.generate_greedy(
        params,
        model_config,
        prompts['tokens'],
        prompts['mask'].sum(1),
        -(-longest_output // 64) * 64,
        fmt.EOS,
        pad_id=fmt.PAD,
    )
    for e, row in zip(chunk, np.asarray(new_tokens)):
      grid = fmt.decode_grid(row)
      solved += grid is not None and np.array_equal(grid, e['output'])
  return {
      'val_loss': loss_sum / max(count, 1),
      'val_exact': solved / len(examples),
      'val_examples': len(examples),
  }


# ----------------------------------------------------------------------------
# The run


def _write_metrics(path: str, record: dict) -> None:
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')


def _truncate_metrics(path: str, last_step: int) -> None:
  """Drops lines logged after the checkpoint we resume from (a killed run's tail)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get('step', 0) <= last_step]
  with open(path, 'w') as f:
    f.writelines(lines)


def train(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Fine-tunes per `config` (configs/finetune.py); returns the final state and
  host counters. `stop_after` ends the run early after that step, as a kill
  would (no final checkpoint beyond the regular ones): for tests and time boxes."""
  os.makedirs(workdir, exist_ok=True)
  data_cfg = data_config_from(config)
  lora_config = lora_config_from(config)
  # No checkpoint: training from scratch is the point, not a warning.
  model_config, base_params, _ = load_base_model(config.model, warn_random=False)

  tasks, report = pretrain_data.load_training_tasks(
      tuple(config.data.train), config.data.contamination_guard
  )
  train_tasks, val_tasks = pretrain_data.split_tasks(tasks, config.data.val_frac, config.seed)
  stream = pretrain_data.PretrainStream(train_tasks, data_cfg)
  val_examples, val_too_long = pretrain_data.validation_examples(
      val_tasks, data_cfg, config.data.val_max_examples
  )
  logging.info(
      'tasks: %s; train %d (%d too long), validation %d tasks / %d examples ' '(%d too long)',
      report,
      len(stream.tasks),
      stream.num_unfit_tasks,
      len(val_tasks),
      len(val_examples),
      val_too_long,
  )

  tx, schedule = make_optimizer(config.optim, config.steps)
  if lora_config is None:
    trainable, frozen = base_params, None
  else:
    trainable = init_lora(jax.random.key(config.seed), model_config, lora_config)
    frozen = base_params
  state = {'params': trainable, 'opt_state': tx.init(trainable), 'step': jnp.int32(0)}
  host = {'tokens_seen': 0, 'targets_seen': 0}

  checkpointer = checkpoint.RunCheckpointer(
      os.path.join(workdir, 'checkpoints'), config.checkpoint_every
  )
  metrics_path = os.path.join(workdir, METRICS_FILE)
  start = checkpointer.latest_step() or 0
  if start:
    state, host = checkpointer.restore(start, state)
    logging.info('resuming from step %d', start)
  _truncate_metrics(metrics_path, start)

  def save(step: int) -> None:
    checkpointer.save(step, state, host)
    hf.save_hf(
        os.path.join(workdir, 'hf'),
        model_config,
        jax.device_get(full_params(state['params'], frozen, lora_config)),
    )

  step_fn = functools.partial(train_step, model_config=model_config, lora_config=lora_config, tx=tx)
  last = config.steps if stop_after is None else min(config.steps, stop_after)
  progress = tqdm(range(start, last), initial=start, total=config.steps, desc='finetune')
  window_tokens, window_start = 0, time.perf_counter()  # tokens/s over the logging window
  for step in progress:
    state, metrics = step_fn(state, frozen, stream.batch(step))
    metrics = jax.device_get(metrics)
    host['tokens_seen'] += int(metrics['tokens'])
    host['targets_seen'] += int(metrics['targets'])
    window_tokens += int(metrics['tokens'])
    done = step + 1
    if done % config.log_every == 0 or done == last:
      record = {
          'step': done,
          'loss': float(metrics['loss']),
          'grad_norm': float(metrics['grad_norm']),
          'lr': float(schedule(step)),
          'tokens_per_s': window_tokens / (time.perf_counter() - window_start),
          'tokens_seen': host['tokens_seen'],
          'targets_seen': host['targets_seen'],
      }
      _write_metrics(metrics_path, record)
      progress.set_postfix(loss=f'{record["loss"]:.3f}', tok_s=f'{record["tokens_per_s"]:.0f}')
      window_tokens, window_start = 0, time.perf_counter()
    if (
        val_examples
        and config.eval_every
        and (done % config.eval_every == 0 or done == config.steps)
    ):
      params = full_params(state['params'], frozen, lora_config)
      record = {
          'step': done,
          **validate(params, model_config, val_examples, config.data.batch_size, data_cfg.max_len),
      }
      _write_metrics(metrics_path, record)
      logging.info('validation: %s', record)
    if done % config.checkpoint_every == 0 or done == config.steps:
      save(done)
  progress.close()
  checkpointer.close()
  logging.info('stream stats: %s', stream.stats)
  return {'state': state, 'host': host, 'model_config': model_config}
