"""Per-task optimizer: clip -> AdamW, hyperparameters injected as arrays.

Everything here acts on ONE task's adapter; the trainer vmaps it over the
task axis, so the clipping norm, Adam moments, step count and learning rate
are per task. The learning rate is not an optax schedule: each task has its
own number of steps, so the trainer computes `warmup_cosine(step_t,
total_t)` per task and writes it into the injected hyperparameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def clipped_adamw(learning_rate, weight_decay, clip_norm, b1, b2, eps):
  return optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
  )


def make_optimizer(
    *,
    weight_decay: float = 0.01,
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
  """clip_by_global_norm + AdamW with every scalar an injected hyperparameter.

  The learning rate starts at 0 and is set per task and step with
  `with_hyperparams`; the others can be overwritten per task the same way.
  """
  return optax.inject_hyperparams(clipped_adamw, hyperparam_dtype=jnp.float32)(
      learning_rate=0.0, weight_decay=weight_decay, clip_norm=clip_norm, b1=b1, b2=b2, eps=eps
  )


def init_task_states(tx: optax.GradientTransformation, lora_T: Any) -> Any:
  """One optimizer state per task: leaves gain the leading task axis T."""
  return jax.vmap(tx.init)(lora_T)


def with_hyperparams(
    opt_state: optax.InjectHyperparamsState, **values
) -> optax.InjectHyperparamsState:
  """A copy of (one task's or the stacked) state with hyperparameters set."""
  unknown = set(values) - set(opt_state.hyperparams)
  if unknown:
    raise KeyError(
        f'unknown hyperparameters {sorted(unknown)}; the optimizer '
        f'has {sorted(opt_state.hyperparams)}'
    )
  hyperparams = dict(opt_state.hyperparams)
  for name, value in values.items():
    old = hyperparams[name]
    hyperparams[name] = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
  return opt_state._replace(hyperparams=hyperparams)


def warmup_cosine(step, total_steps, warmup_frac: float):
  """Learning-rate multiplier in [0, 1]: linear warmup, then cosine to 0.

  Works on arrays (per-task totals). Warmup steps are
  `floor(warmup_frac * total)`; step s < warmup gets (s + 1) / warmup, so no
  step is wasted at lr 0; after that a half cosine from 1 to 0 at `total`.
  """
  step = jnp.asarray(step, jnp.float32)
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  warmup = jnp.floor(warmup_frac * total)
  ramp = (step + 1.0) / jnp.maximum(warmup, 1.0)
  progress = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(step < warmup, ramp, cosine)
