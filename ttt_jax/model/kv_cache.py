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

from ttt_jax.model import llama, row_groups
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
    group_tokens: int | None = None,
    source_B: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
  """Runs right-padded prompts (row b real for its first lengths[b] >= 1 tokens) into an
  empty cache (end == 0, as init_cache makes it; not checked: what a filled cache held
  would be ignored and overwritten); returns the float32 logits [B, V] after
  each row's last real token, and the cache with end = lengths. Positions default to
  0, 1, 2, ... The prompts attend to themselves with the full forward's kernel, in
  groups of rows of at most `group_tokens` tokens (row_groups: on a CPU by default).

  `source_B` [B] says row b's prompt (tokens, length, positions) is row source[b]'s,
  with source[source[b]] == source[b]: in groups, only the source rows are computed
  and the others copy their cache rows and logits (one pass computes every row)."""
  B, S = tokens_BS.shape
  rows = row_groups.rows_per_group(B, S, group_tokens)
  one_pass = lambda *row_args, cache: _prefill_pass(
      params, config, *row_args, cache, lora=lora, lora_config=lora_config
  )
  if rows == B:
    return one_pass(tokens_BS, lengths_B, positions_BS, cache=cache)
  if source_B is None:
    return _prefill_groups(one_pass, config, rows, tokens_BS, lengths_B, positions_BS, cache, B)
  # Source rows first (stably), computed; each row then reads its source's results.
  is_source_B = source_B == jnp.arange(B)
  order_B = jnp.argsort(~is_source_B, stable=True)
  at_B = jnp.argsort(order_B)[source_B]  # where row b's source went
  perm = lambda x: None if x is None else x[order_B]
  logits_BV, cache = _prefill_groups(
      one_pass,
      config,
      rows,
      perm(tokens_BS),
      perm(lengths_B),
      perm(positions_BS),
      cache,
      jnp.sum(is_source_B, dtype=jnp.int32),
  )
  rows_of = lambda x: jnp.take(x, at_B, axis=1)
  return logits_BV[at_B], {
      'k': rows_of(cache['k']),
      'v': rows_of(cache['v']),
      'end': cache['end'][at_B],
  }


def _prefill_groups(one_pass, config, rows, tokens_BS, lengths_B, positions_BS, cache, live_rows):
  """`prefill` of the first `live_rows` rows (rounded up to whole groups), `rows` at a time,
  each group into its rows of `cache`; rows past them keep their zeros."""
  B, S = tokens_BS.shape

  def group(i, carry):
    logits_BV, k, v = carry
    take = lambda x: None if x is None else jax.lax.dynamic_slice_in_dim(x, i * rows, rows)
    fresh = init_cache(config, rows, S, dtype=k.dtype)
    logits_GV, written = one_pass(take(tokens_BS), take(lengths_B), take(positions_BS), cache=fresh)
    put = lambda full, part, axis: jax.lax.dynamic_update_slice_in_dim(full, part, i * rows, axis)
    return put(logits_BV, logits_GV, 0), put(k, written['k'], 1), put(v, written['v'], 1)

  logits_BV = jnp.zeros((B, config.vocab_size), jnp.float32)
  num_groups = -(-live_rows // rows)
  logits_BV, k, v = jax.lax.fori_loop(0, num_groups, group, (logits_BV, cache['k'], cache['v']))
  return logits_BV, {'k': k, 'v': v, 'end': cache['end'] + lengths_B}


def _prefill_pass(params, config, tokens_BS, lengths_B, positions_BS, cache, **lora):
  """`prefill` of all the given rows in one forward."""
  mask_BS = jnp.arange(tokens_BS.shape[1])[None, :] < lengths_B[:, None]
  h_BSD, cache = llama.hidden_states(
      params,
      tokens_BS,
      config,
      positions_BS=positions_BS,
      mask_BS=mask_BS,
      cache=cache,
      fresh_cache=True,
      **lora,
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
