"""Hand-written LoRA for the Llama projections.

An adapter mirrors the targeted weights of `params['layers']`:
`{'q': {'a': [L, D, r], 'b': [L, r, H*Dh]}, ...}`; adapters of T tasks stacked
together gain a leading axis (`[T, L, D, r]`). The forward computes
`y = x W + scale * (x a) b` (`llama.project`), never forming `W + a b`;
`merge_lora` folds an adapter into the base weights for export (a quantized base
weight, model/quant.py, becomes dense there).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ttt_jax.model import quant
from ttt_jax.model.config import ModelConfig

# Our projection names -> the Hugging Face / PEFT module names (for a PEFT export).
TARGETS: dict[str, str] = {
    'q': 'q_proj',
    'k': 'k_proj',
    'v': 'v_proj',
    'o': 'o_proj',
    'gate': 'gate_proj',
    'up': 'up_proj',
    'down': 'down_proj',
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Adapter shape and scale; the default targets are the paper's (q, v, o and the MLP)."""

  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ('q', 'v', 'o', 'gate', 'up', 'down')
  rslora: bool = False

  def __post_init__(self):
    if not isinstance(self.rank, int) or self.rank <= 0:
      raise ValueError(f'LoraConfig.rank must be a positive int, got {self.rank!r}')
    if not isinstance(self.targets, tuple) or not self.targets:
      raise ValueError(f'LoraConfig.targets must be a non-empty tuple, got {self.targets!r}')
    unknown = [t for t in self.targets if t not in TARGETS]
    if unknown or len(set(self.targets)) != len(self.targets):
      raise ValueError(
          f'LoraConfig.targets {self.targets!r}: each must be one of {tuple(TARGETS)}, '
          'without repeats'
      )

  @property
  def scale(self) -> float:
    """alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA (as peft's use_rslora)."""
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


def projection_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
  """(in, out) features of each of the seven projections of a layer."""
  d, f = config.hidden_size, config.intermediate_size
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  return {
      'q': (d, q),
      'k': (d, kv),
      'v': (d, kv),
      'o': (q, d),
      'gate': (d, f),
      'up': (d, f),
      'down': (f, d),
  }


def init_lora(
    rng: jax.Array,
    config: ModelConfig,
    lora_config: LoraConfig,
    num_tasks: int | None = None,
    dtype=jnp.float32,
) -> dict:
  """A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0 (peft's default init).

  peft calls `kaiming_uniform_(A, a=sqrt(5))`, whose bound is
  sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(in_features). With `num_tasks`, the
  tree gains a leading task axis and each task draws A from its own key.
  """
  if num_tasks is not None:
    return jax.vmap(lambda key: init_lora(key, config, lora_config, None, dtype))(
        jax.random.split(rng, num_tasks)
    )
  shapes = projection_shapes(config)
  lora = {}
  for name in lora_config.targets:
    fan_in, fan_out = shapes[name]
    # fold_in by the target's fixed index: a target's A does not depend on the other targets.
    key = jax.random.fold_in(rng, list(TARGETS).index(name))
    bound = 1.0 / math.sqrt(fan_in)
    a = jax.random.uniform(key, (config.num_layers, fan_in, lora_config.rank), dtype, -bound, bound)
    b = jnp.zeros((config.num_layers, lora_config.rank, fan_out), dtype)
    lora[name] = {'a': a, 'b': b}
  return lora


def with_rank(lora: dict, rank: int) -> dict:
  """The adapter (any leading axes) at rank `rank`: A's columns and B's rows past it cut
  off, or zeros appended (a zero-padded adapter computes the same `(x a) b`)."""

  def one(ab):
    r = ab['a'].shape[-1]
    if rank <= r:
      return {'a': ab['a'][..., :rank], 'b': ab['b'][..., :rank, :]}
    a, b, extra = ab['a'], ab['b'], rank - r
    return {
        'a': jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)]),
        'b': jnp.pad(b, [(0, 0)] * (b.ndim - 2) + [(0, extra), (0, 0)]),
    }

  return {name: one(ab) for name, ab in lora.items()}


def merge_lora(params: dict, lora: dict, lora_config: LoraConfig) -> dict:
  """Base params with `W + scale * a b` folded in for every adapted projection."""
  layers = dict(params['layers'])
  for name, ab in lora.items():
    if name not in lora_config.targets:
      raise ValueError(
          f'merge_lora: adapter has {name!r}, not in LoraConfig.targets {lora_config.targets}'
      )
    w = layers[name]
    if ab['a'].ndim != 3:
      raise ValueError(
          f'merge_lora: lora[{name!r}]["a"] has shape {ab["a"].shape}; expected [L, in, r] '
          '(merge one task of a stacked adapter at a time)'
      )
    delta = jnp.einsum('lir,lro->lio', ab['a'].astype(jnp.float32), ab['b'].astype(jnp.float32))
    # A quantized W merges into a dense one of its dtype before quantization.
    layers[name] = (quant.dense(w, jnp.float32) + lora_config.scale * delta).astype(w.dtype)
  return {**params, 'layers': layers}
