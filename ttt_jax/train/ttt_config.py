"""The per-task adapter recipe of TTT, the per-job knobs an in-step sweep varies (Hyper:
train/hyper.py), and each job's step count and random stream."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ttt_jax.model.lora import LoraConfig
from ttt_jax.train import optim

OVER_SLOTS = ('auto', 'vmap', 'map')


@dataclasses.dataclass(frozen=True)
class Hyper:
  """One job's knobs (their defaults: `TTTConfig.hyper()`)."""

  lr: float
  alpha: float
  rank: int
  weight_decay: float
  warmup_frac: float
  max_steps: int | None

  def of(self, ttt_config: TTTConfig) -> TTTConfig:
    """`ttt_config` with this job's values: the recipe of the job trained alone."""
    lora = dataclasses.replace(ttt_config.lora, rank=self.rank, alpha=self.alpha)
    fields = dataclasses.asdict(self)
    del fields['rank'], fields['alpha']
    return dataclasses.replace(ttt_config, lora=lora, **fields)


@dataclasses.dataclass(frozen=True)
class TTTConfig:
  """Per-task adapter training; defaults are the paper's recipe (1B/3B)."""

  lora: LoraConfig = LoraConfig(rank=128, alpha=16.0)
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
  # How the step runs forward + backward over its T slots: 'vmap' (one batched program,
  # what a GPU or TPU wants), 'map' (lax.map: one slot after another inside the same
  # jitted step), 'auto' (map on one CPU device, where one slot's batch already fills
  # the cores, vmap elsewhere). Same numbers either way.
  over_slots: str = 'auto'
  seed: int = 0

  def __post_init__(self):
    for name in ('epochs', 'batch_size'):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f'TTTConfig.{name} must be positive, got {getattr(self, name)!r}')
    if not 0.0 <= self.warmup_frac < 1.0:
      raise ValueError(f'TTTConfig.warmup_frac must be in [0, 1), got {self.warmup_frac!r}')
    for name in ('loss_capacity', 'max_steps'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ValueError(f'TTTConfig.{name} must be positive or None, got {value!r}')
    if self.over_slots not in OVER_SLOTS:
      raise ValueError(f'TTTConfig.over_slots must be one of {OVER_SLOTS}, got {self.over_slots!r}')
    if not isinstance(self.lora, LoraConfig):
      raise ValueError(f'TTTConfig.lora must be a LoraConfig, got {self.lora!r}')

  def hyper(self, **overrides) -> Hyper:
    """This recipe's per-job knobs (train/hyper.py), some of them replaced; checked by
    building the recipe of that job (a bad value raises as the config would)."""
    hyper = Hyper(
        lr=self.lr,
        alpha=self.lora.alpha,
        rank=self.lora.rank,
        weight_decay=self.weight_decay,
        warmup_frac=self.warmup_frac,
        max_steps=self.max_steps,
    )
    hyper = dataclasses.replace(hyper, **overrides)
    hyper.of(self)
    return hyper

  def optimizer(self) -> optax.GradientTransformation:
    return optim.make_optimizer(
        weight_decay=self.weight_decay,
        clip_norm=self.clip_norm,
        b1=self.b1,
        b2=self.b2,
        eps=self.eps,
    )


def job_rng(ttt_seed: int, job_seed) -> jax.Array:
  """The random stream of a job's int seed (run_ttt: a hash of the task id)."""
  return jax.random.fold_in(jax.random.key(ttt_seed), job_seed)


def steps_per_epoch(num_examples, batch_size: int):
  return jnp.maximum((num_examples + batch_size - 1) // batch_size, 1)


def total_steps(num_examples, ttt_config: TTTConfig):
  """A job's optimizer steps: epochs x ceil(examples / batch), capped by max_steps."""
  total = ttt_config.epochs * steps_per_epoch(num_examples, ttt_config.batch_size)
  if ttt_config.max_steps is not None:
    total = jnp.minimum(total, ttt_config.max_steps)
  return total.astype(jnp.int32)
