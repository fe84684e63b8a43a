"""KV cache and greedy decoding.

The cache is `{'k': [L, B, S, K, Dh], 'v': [L, B, S, K, Dh], 'end': [B]}`: row b
holds `end[b]` valid slots. `llama.forward(..., cache=cache)` writes a chunk at
each row's `end` (a row-wise dynamic update slice, done as one in-place
scatter: nothing rolled or copied) and advances `end` by the chunk's real
tokens; padding must be on the right. `prefill` and
`decode_step` are the reusable pieces for samplers (ttt_jax/infer/decode.py);
`generate_greedy` is prefill + a `lax.while_loop` of decode steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  """An empty cache for `batch` rows of up to `max_len` tokens (dtype: compute dtype by default)."""
  dtype = config.compute_jnp_dtype if dtype is None else dtype
  shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
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
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
) -> tuple[jax.Array, dict]:
  """Runs right-padded prompts (row b real for its first lengths[b] >= 1 tokens) into the
  cache; returns the float32 logits [B, V] after each row's last real token, and the cache
  with end advanced by lengths."""
  mask_BS = jnp.arange(tokens_BS.shape[1])[None, :] < lengths_B[:, None]
  h_BSD, cache = llama.hidden_states(
      params, tokens_BS, config, mask_BS=mask_BS, lora=lora, lora_config=lora_config, cache=cache
  )
  last_BD = jnp.take_along_axis(h_BSD, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
  return llama.logits_from_hidden(params, last_BD, config), cache


def decode_step(
    params: dict,
    config: ModelConfig,
    tokens_B: jax.Array,
    cache: dict,
    *,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
) -> tuple[jax.Array, dict]:
  """Feeds one token per row at position end[b]; returns float32 logits [B, V] and the cache."""
  logits_B1V, cache = llama.forward(
      params, tokens_B[:, None], config, lora=lora, lora_config=lora_config, cache=cache
  )
  return logits_B1V[:, 0], cache


@functools.partial(
    jax.jit, static_argnames=('config', 'max_new_tokens', 'eos_id', 'lora_config', 'pad_id')
)
def generate_greedy(
    params: dict,
    config: ModelConfig,
    prompt_tokens_BS: jax.Array,
    prompt_lengths_B: jax.Array,
    max_new_tokens: int,
    eos_id: int,
    *,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
    pad_id: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Greedy continuation of right-padded prompts.

  Returns the new tokens [B, max_new_tokens] int32 (each row stops after its
  first `eos_id`, the rest is `pad_id`, default `eos_id`) and their lengths [B]
  (counting the EOS). Stops early once every row has finished.
  """
  pad_id = eos_id if pad_id is None else pad_id
  B, S = prompt_tokens_BS.shape
  cache = init_cache(config, B, S + max_new_tokens)
  logits_BV, cache = prefill(
      params, config, prompt_tokens_BS, prompt_lengths_B, cache, lora=lora, lora_config=lora_config
  )

  def not_finished(state):
    step, _, done_B, _, _, _ = state
    return (step < max_new_tokens) & ~jnp.all(done_B)

  def step_fn(state):
    step, out_BN, done_B, lengths_B, logits_BV, cache = state
    token_B = jnp.where(done_B, pad_id, jnp.argmax(logits_BV, axis=-1).astype(jnp.int32))
    out_BN = jax.lax.dynamic_update_index_in_dim(out_BN, token_B, step, axis=1)
    lengths_B = lengths_B + (~done_B).astype(jnp.int32)
    done_B = done_B | (token_B == eos_id)
    logits_BV, cache = decode_step(
        params, config, token_B, cache, lora=lora, lora_config=lora_config
    )
    return step + 1, out_BN, done_B, lengths_B, logits_BV, cache

  state = (
      jnp.int32(0),
      jnp.full((B, max_new_tokens), pad_id, jnp.int32),
      jnp.zeros((B,), bool),
      jnp.zeros((B,), jnp.int32),
      logits_BV,
      cache,
  )
  _, out_BN, _, lengths_B, _, _ = jax.lax.while_loop(not_finished, step_fn, state)
  return out_BN, lengths_B
