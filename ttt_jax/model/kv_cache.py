"""The KV cache: prefill and one decode step.

The cache is `{'k': [L, B, K, T, Dh], 'v': [L, B, K, T, Dh], 'end': [B]}`: row b
holds `end[b]` valid slots (heads before slots: the layout a decode step's
attention reads, attention.cached_attention). `llama.forward(..., cache=cache)` writes a chunk at
each row's `end` (a row-wise dynamic update slice, done as one in-place
scatter: nothing rolled or copied) and advances `end` by the chunk's real
tokens; padding must be on the right. `prefill` and
`decode_step` are the pieces the decoders of ttt_jax/infer/decode.py are made of.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  """An empty cache for `batch` rows of up to `max_len` tokens (dtype: compute dtype by default)."""
  dtype = config.compute_jnp_dtype if dtype is None else dtype
  shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
  return {
      'k': jnp.zeros(shape, dtype),
      'v': jnp.zeros(shape, dtype),
      'end': jnp.zeros((batch,), jnp.int32),
  }


def prefill(
    params: dict,
    config: ModelConfig,
    tokens_BS: jax.Array,
    lengths_B: jax.Array,
    cache: dict,
    *,
    positions_BS: jax.Array | None = None,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
) -> tuple[jax.Array, dict]:
  """Runs right-padded prompts (row b real for its first lengths[b] >= 1 tokens) into an
  empty cache (end == 0, as init_cache makes it; not checked: what a filled cache held
  would be ignored and overwritten); returns the float32 logits [B, V] after
  each row's last real token, and the cache with end = lengths. Positions default to
  0, 1, 2, ... The prompts attend to themselves with the full forward's kernel."""
  mask_BS = jnp.arange(tokens_BS.shape[1])[None, :] < lengths_B[:, None]
  h_BSD, cache = llama.hidden_states(
      params,
      tokens_BS,
      config,
      positions_BS=positions_BS,
      mask_BS=mask_BS,
      lora=lora,
      lora_config=lora_config,
      cache=cache,
      fresh_cache=True,
  )
  last_BD = jnp.take_along_axis(h_BSD, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
  return llama.logits_from_hidden(params, last_BD, config), cache


def decode_step(
    params: dict,
    config: ModelConfig,
    tokens_B: jax.Array,
    cache: dict,
    *,
    positions_B: jax.Array | None = None,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
) -> tuple[jax.Array, dict]:
  """Feeds one token per row at its cache slot end[b], at position `positions_B` (default:
  end[b]); returns float32 logits [B, V] and the cache."""
  logits_B1V, cache = llama.forward(
      params,
      tokens_B[:, None],
      config,
      positions_BS=None if positions_B is None else positions_B[:, None],
      lora=lora,
      lora_config=lora_config,
      cache=cache,
  )
  return logits_B1V[:, 0], cache
