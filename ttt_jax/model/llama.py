"""Pure-functional Llama-3 decoder: params are a plain dict pytree, layers run under `lax.scan`.

Params (Linear weights stored [in, out], layers stacked on a leading axis L):
  {'embed': [V, D],
   'layers': {'attn_norm': [L, D], 'q': [L, D, H*Dh], 'k': [L, D, K*Dh], 'v': [L, D, K*Dh],
              'o': [L, H*Dh, D], 'mlp_norm': [L, D], 'gate': [L, D, F], 'up': [L, D, F],
              'down': [L, F, D]},
   'final_norm': [D],
   'lm_head': [D, V]}   # absent when config.tie_word_embeddings

Numerics follow transformers' LlamaForCausalLM: RMSNorm in float32, rotate-half
RoPE with llama3 frequency scaling, grouped-query attention (query head h reads
kv head h // (H/K); attention.py), SwiGLU MLP. Matmuls run in `config.compute_dtype`;
softmax, norms and logits in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import attention, attention_dispatch, lora_ops, quant
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS, LoraConfig, projection_shapes

LAYER_NORMS = ('attn_norm', 'mlp_norm')


def init_params(config: ModelConfig, rng: jax.Array, *, std: float = 0.02) -> dict:
  """Random params: N(0, std) weights (HF's initializer_range), unit norms."""
  dtype, num_layers, d = config.param_jnp_dtype, config.num_layers, config.hidden_size
  keys = iter(jax.random.split(rng, len(TARGETS) + 2))
  normal = lambda shape: (std * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)
  layers = {name: normal((num_layers, *shape)) for name, shape in projection_shapes(config).items()}
  layers |= {name: jnp.ones((num_layers, d), dtype) for name in LAYER_NORMS}
  params = {
      'embed': normal((config.vocab_size, d)),
      'layers': layers,
      'final_norm': jnp.ones((d,), dtype),
  }
  if not config.tie_word_embeddings:
    params['lm_head'] = normal((d, config.vocab_size))
  return params


# --- building blocks ----------------------------------------------------------------------


def rms_norm(x_BSD: jax.Array, weight_D: jax.Array, eps: float) -> jax.Array:
  """RMSNorm computed in float32 (as HF), returned in x's dtype."""
  x32 = x_BSD.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return weight_D.astype(x_BSD.dtype) * x32.astype(x_BSD.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies [Dh/2] in float32, llama3-scaled as transformers'
  `_compute_llama3_parameters` does (a static constant of the config)."""
  dim = config.head_dim
  inv_freq = 1.0 / (np.float32(config.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  rs = config.rope_scaling
  if rs is None:
    return inv_freq
  low_freq_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
  high_freq_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  # Long wavelengths are slowed down by `factor`, short ones kept, the middle band interpolated.
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq)
  smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
      rs.high_freq_factor - rs.low_freq_factor
  )
  smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions_BS: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """cos and sin [B, S, Dh] in float32, both halves repeated (HF rotate-half layout)."""
  freqs_BSh = positions_BS.astype(jnp.float32)[..., None] * jnp.asarray(rope_inv_freq(config))
  angles_BSH = jnp.concatenate([freqs_BSh, freqs_BSh], axis=-1)
  return jnp.cos(angles_BSH), jnp.sin(angles_BSH)


def apply_rope(x_BSNH: jax.Array, cos_BSH: jax.Array, sin_BSH: jax.Array) -> jax.Array:
  """Rotates pairs (i, i + Dh/2) of every head; computed in float32."""
  x = x_BSNH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * cos_BSH[:, :, None, :] + rotated * sin_BSH[:, :, None, :]
  return out.astype(x_BSNH.dtype)


def project(x_BSI: jax.Array, w_IO: jax.Array, lora_ab: dict | None = None, scale=0.0) -> jax.Array:
  """x W, plus the LoRA path scale (x a) b when an adapter is given; never forms W + a b.

  The LoRA path has a hand-ordered backward (`lora_ops.lora_project`). A quantized W
  (quant.QuantizedWeight) is dequantized in x's dtype inside the matmul, both ways."""
  if lora_ab is None:
    if quant.is_quantized(w_IO):
      return quant.matmul(x_BSI, w_IO)
    return jnp.einsum('bsi,io->bso', x_BSI, w_IO.astype(x_BSI.dtype))
  return lora_ops.lora_project(x_BSI, w_IO, lora_ab['a'], lora_ab['b'], scale)


def _write_cache(
    cache_LBKTD: jax.Array, new_BSKD: jax.Array, layer: jax.Array, end_B: jax.Array
) -> jax.Array:
  """Writes each row's new keys (or values) at [layer, row, :, end[row]:end[row]+S], in place.

  This is a row-wise dynamic_update_slice written as one scatter: vmapping
  `lax.dynamic_update_slice` over the row axis makes XLA transpose the whole
  cache there and back at every layer. Slots past max_len are dropped (a
  dynamic_update_slice would clamp and overwrite valid slots).
  """
  B, S = new_BSKD.shape[:2]
  rows_B1 = jnp.arange(B)[:, None]
  slots_BS = end_B[:, None] + jnp.arange(S)[None, :]
  # Advanced indices split by a slice: the indexed block is laid out [B, S, K, D].
  return cache_LBKTD.at[layer, rows_B1, :, slots_BS].set(
      new_BSKD.astype(cache_LBKTD.dtype), mode='drop'
  )


def _decoder_layer(
    x_BSD,
    layer,
    lora_layer,
    cache_kv,
    layer_idx,
    *,
    config,
    scale,
    cos_sin,
    key_valid_BS,
    segments_BS,
    end_B,
    new_end_B,
    fresh_cache,
):
  """One pre-norm block: x + attn(norm(x)), then + mlp(norm(x)). Returns (x, cache_kv)."""
  B, S, _ = x_BSD.shape
  proj = lambda x, name: project(x, layer[name], lora_layer.get(name), scale)

  h_BSD = rms_norm(x_BSD, layer['attn_norm'], config.rms_norm_eps)
  q_BSHD = proj(h_BSD, 'q').reshape(B, S, config.num_heads, config.head_dim)
  k_BSKD = proj(h_BSD, 'k').reshape(B, S, config.num_kv_heads, config.head_dim)
  v_BSKD = proj(h_BSD, 'v').reshape(B, S, config.num_kv_heads, config.head_dim)
  q_BSHD, k_BSKD = apply_rope(q_BSHD, *cos_sin), apply_rope(k_BSKD, *cos_sin)

  if cache_kv is not None:  # write this chunk into the cache
    cache_kv = tuple(
        _write_cache(c, new, layer_idx, end_B) for c, new in zip(cache_kv, (k_BSKD, v_BSKD))
    )
  if cache_kv is None or fresh_cache:  # the chunk attends to itself alone
    attn_BSHD = attention_dispatch.attend(
        q_BSHD,
        k_BSKD,
        v_BSKD,
        key_valid_BS,
        segments_BS,
        impl=config.attention_impl,
        compute_dtype=config.compute_dtype,
    )
  else:  # to the cached layer, this chunk included
    query_slot_BS = end_B[:, None] + jnp.arange(S)[None, :]
    attn_BSHD = attention.cached_attention(q_BSHD, *cache_kv, layer_idx, query_slot_BS, new_end_B)
  x_BSD = x_BSD + proj(attn_BSHD.reshape(B, S, -1), 'o')

  h_BSD = rms_norm(x_BSD, layer['mlp_norm'], config.rms_norm_eps)
  gated_BSF = jax.nn.silu(proj(h_BSD, 'gate')) * proj(h_BSD, 'up')
  return x_BSD + proj(gated_BSF, 'down'), cache_kv


def _remat(fn, mode: str):
  if mode == 'none':
    return fn
  policy = {'full': None, 'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}[mode]
  return jax.checkpoint(fn, policy=policy, prevent_cse=False)


def _check_lora(lora: dict | None, lora_config: LoraConfig | None, config: ModelConfig) -> dict:
  if lora is None:
    return {}
  if lora_config is None:
    raise ValueError('forward: lora was given without lora_config (needed for the scale)')
  shapes = projection_shapes(config)
  for name, ab in lora.items():
    if name not in lora_config.targets:
      raise ValueError(
          f'forward: lora has {name!r}, not in LoraConfig.targets {lora_config.targets}'
      )
    fan_in, fan_out = shapes[name]
    want = {
        'a': (config.num_layers, fan_in, lora_config.rank),
        'b': (config.num_layers, lora_config.rank, fan_out),
    }
    got = {k: tuple(ab[k].shape) for k in ('a', 'b')}
    if got != want:
      raise ValueError(
          f'forward: lora[{name!r}] shapes {got}, expected {want} '
          '(vmap over the task axis of stacked adapters)'
      )
  return lora


# --- the model ------------------------------------------------------------------------------


def hidden_states(
    params: dict,
    tokens_BS: jax.Array,
    config: ModelConfig,
    *,
    positions_BS: jax.Array | None = None,
    mask_BS: jax.Array | None = None,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
    lora_scale: jax.Array | None = None,
    cache: dict | None = None,
    fresh_cache: bool = False,
    segments_BS: jax.Array | None = None,
) -> tuple[jax.Array, dict | None]:
  """Final-normed hidden states [B, S, D] (compute dtype) and the updated cache.

  `mask_BS` marks real tokens; padding may be on either side without a cache.
  `segments_BS` (no cache) marks the examples of packed rows: a token attends
  only within its segment; give each segment its own positions too.
  With a cache the chunk is written at each row's `cache['end']` and padding
  must be on the right: `end` advances by the number of real tokens, so the
  next chunk overwrites the padding. Callers keep end + S <= max_len.
  `fresh_cache` promises the cache is empty (end == 0): the chunk then attends to
  itself with the kernel of a full forward, not through the cache.
  `lora_scale` (a float32 scalar, may be traced) replaces `lora_config.scale`: the TTT
  step's per-slot scale when slots sweep alpha or rank (the adapter then has
  `lora_config.rank`, the largest, columns).
  """
  if tokens_BS.ndim != 2:
    raise ValueError(f'forward: tokens must be [B, S], got shape {tokens_BS.shape}')
  B, S = tokens_BS.shape
  mask_BS = jnp.ones((B, S), bool) if mask_BS is None else mask_BS.astype(bool)
  if mask_BS.shape != (B, S):
    raise ValueError(f'forward: mask shape {mask_BS.shape} != tokens shape {(B, S)}')
  lora = _check_lora(lora, lora_config, config)
  scale = 0.0
  if lora:
    scale = lora_config.scale if lora_scale is None else lora_scale
  if segments_BS is not None and cache is not None:
    raise ValueError('forward: segments_BS (packed rows) cannot be used with a cache')

  steps_BS = jnp.maximum(jnp.cumsum(mask_BS, axis=1, dtype=jnp.int32) - 1, 0)
  if cache is None:
    end_B = new_end_B = cache_kv = None
  else:
    end_B = cache['end']
    steps_BS = steps_BS + end_B[:, None]
    new_end_B = end_B + mask_BS.sum(axis=1, dtype=jnp.int32)
    cache_kv = (cache['k'], cache['v'])
  positions_BS = steps_BS if positions_BS is None else positions_BS

  layer_fn = functools.partial(
      _decoder_layer,
      config=config,
      scale=scale,
      cos_sin=rope_cos_sin(positions_BS, config),
      key_valid_BS=mask_BS,
      segments_BS=segments_BS,
      end_B=end_B,
      new_end_B=new_end_B,
      fresh_cache=fresh_cache,
  )

  def body(carry, xs):
    x_BSD, cache_kv = carry
    layer, lora_layer, layer_idx = xs
    return layer_fn(x_BSD, layer, lora_layer, cache_kv, layer_idx), None

  # The whole cache rides in the carry (not the scanned xs) so each layer writes
  # its few new slots in place instead of restacking every layer's cache.
  x_BSD = jnp.take(params['embed'], tokens_BS, axis=0).astype(config.compute_jnp_dtype)
  (x_BSD, cache_kv), _ = jax.lax.scan(
      _remat(body, config.remat),
      (x_BSD, cache_kv),
      (params['layers'], lora, jnp.arange(config.num_layers)),
  )

  h_BSD = rms_norm(x_BSD, params['final_norm'], config.rms_norm_eps)
  new_cache = None if cache is None else {'k': cache_kv[0], 'v': cache_kv[1], 'end': new_end_B}
  return h_BSD, new_cache


def logits_from_hidden(params: dict, h_BSD: jax.Array, config: ModelConfig) -> jax.Array:
  """LM head on (any subset of) hidden states [..., D] -> float32 logits [..., V]."""
  cd = config.compute_jnp_dtype
  if config.tie_word_embeddings:
    return jnp.einsum(
        '...d,vd->...v',
        h_BSD.astype(cd),
        params['embed'].astype(cd),
        preferred_element_type=jnp.float32,
    )
  return jnp.einsum(
      '...d,dv->...v',
      h_BSD.astype(cd),
      params['lm_head'].astype(cd),
      preferred_element_type=jnp.float32,
  )


def forward(
    params: dict,
    tokens_BS: jax.Array,
    config: ModelConfig,
    *,
    positions_BS: jax.Array | None = None,
    mask_BS: jax.Array | None = None,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
    cache: dict | None = None,
) -> tuple[jax.Array, dict | None]:
  """Logits [B, S, V] (float32) and the updated cache (None without one).

  Positions default to the count of real tokens before each one (plus the
  cache's `end`), so left- and right-padded rows get the same positions.
  """
  h_BSD, cache = hidden_states(
      params,
      tokens_BS,
      config,
      positions_BS=positions_BS,
      mask_BS=mask_BS,
      lora=lora,
      lora_config=lora_config,
      cache=cache,
  )
  return logits_from_hidden(params, h_BSD, config), cache
