"""Grouped-query causal attention: three implementations with the same numerics.

- `xla_attention`: one masked softmax over the full [S, T] score matrix, for any
  queries and keys: the plain statement of the convention, the reference the
  tests hold the other two to.
- `cached_attention`: a few queries per row (a decode step) over a KV cache in
  its own layout [B, K, T, D], in key blocks with an online softmax, visiting only
  the blocks below the batch's longest live prefix: a cache sized for the longest
  possible answer costs what its filled part costs.
- `blockwise_attention`: causal self-attention without a cache, in query blocks
  that only see keys up to their own end (about half the score FLOPs of the
  full matrix), with a custom VJP that saves the output and the log-sum-exp and
  recomputes the scores in the backward instead of storing [S, S] probabilities.
  On the 2-core CPU this beat autodiff through either form. Two layout rules
  keep XLA:CPU from copying score-sized tensors (each measured: together the
  attention's forward + backward took 0.67x the time): the mask is an additive
  -inf bias (no select over the scores), and every matmul with a score block
  contracts the score's minor axis or puts the token axis first, so dK and dV
  are formed transposed ([D, T], small) and keys are transposed once per call.

Convention of both: query s sees key t iff t <= query_slot[s] and key_valid[t]
(and, in rows packed with several examples, segment[t] == segment[s]); a query
that sees no key (a left-padding slot) outputs zeros, never NaN.
Scores, softmax and the log-sum-exp are float32.
"""

from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp

BLOCK_SIZE = 128
CACHE_BLOCK = 256  # cache slots per step of cached_attention's loop


def xla_attention(
    q_BSHD: jax.Array,
    k_BTKD: jax.Array,
    v_BTKD: jax.Array,
    query_slot_BS: jax.Array,
    key_valid_BT: jax.Array,
    segments_BS: jax.Array | None = None,
) -> jax.Array:
  """Masked softmax over all T keys; query head h reads kv head h // (H/K).

  `segments_BS` (packed rows, no cache: S == T) keeps each query within its segment."""
  num_kv_heads, head_dim = k_BTKD.shape[-2:]
  q_BSKGD = einops.rearrange(q_BSHD, 'b s (k g) d -> b s k g d', k=num_kv_heads)
  scores = jnp.einsum('bskgd,btkd->bkgst', q_BSKGD, k_BTKD, preferred_element_type=jnp.float32)
  scores = scores * (head_dim**-0.5)
  key_slot_T = jnp.arange(k_BTKD.shape[1])
  visible_BST = (key_slot_T[None, None, :] <= query_slot_BS[:, :, None]) & key_valid_BT[:, None, :]
  if segments_BS is not None:
    visible_BST &= segments_BS[:, :, None] == segments_BS[:, None, :]
  scores = jnp.where(visible_BST[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  # A query that sees no key would average all keys uniformly: zero it instead.
  probs = probs * jnp.any(visible_BST, axis=-1)[:, None, None, :, None]
  out_BSKGD = jnp.einsum('bkgst,btkd->bskgd', probs.astype(v_BTKD.dtype), v_BTKD)
  return einops.rearrange(out_BSKGD, 'b s k g d -> b s (k g) d')


def cached_attention(
    q_BSHD: jax.Array,
    k_LBKTD: jax.Array,
    v_LBKTD: jax.Array,
    layer: jax.Array | int,
    query_slot_BS: jax.Array,
    end_B: jax.Array,
    block_size: int = CACHE_BLOCK,
) -> jax.Array:
  """Queries at cache slots `query_slot_BS` over `layer` of a cache whose row b holds `end_B[b]`
  valid slots (this chunk's included): query s sees slot t iff t <= query_slot[s] and t < end.

  The loop runs over ceil(max(end) / block) key blocks, a number known only at run time:
  slots past every row's end are never read. Each block is sliced from the cache of all
  layers (slicing the layer first would copy all of it). The last block is shifted left to
  fit the cache (slots an earlier block saw are masked out of it), so T need not be a
  multiple of the block.
  """
  _, B, K, T, D = k_LBKTD.shape
  C = min(block_size, T)
  q_BKGSD = einops.rearrange(q_BSHD, 'b s (k g) d -> b k g s d', k=K)
  f32 = jnp.float32

  def block(i, carry):
    max_BKGS, total_BKGS, acc_BKGSD = carry
    start = jnp.minimum(i * C, T - C)
    k_BKCD, v_BKCD = (
        jax.lax.dynamic_slice(x, (layer, 0, 0, start, 0), (1, B, K, C, D))[0].astype(q_BSHD.dtype)
        for x in (k_LBKTD, v_LBKTD)
    )
    slot_C = start + jnp.arange(C)
    visible_BSC = (slot_C >= i * C)[None, None] & (slot_C[None, None] <= query_slot_BS[..., None])
    visible_BSC &= slot_C[None, None] < end_B[:, None, None]
    scores = jnp.einsum('bkgsd,bkcd->bkgsc', q_BKGSD, k_BKCD, preferred_element_type=f32)
    # A select, not an additive mask: a non-finite key past `end` stays out of the softmax
    # (the cache only holds finite values: zeros, or keys and values of real tokens).
    scores = jnp.where(visible_BSC[:, None, None], scores * D**-0.5, -jnp.inf)
    new_max = jnp.maximum(max_BKGS, jnp.max(scores, axis=-1))
    safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)  # nothing seen yet
    unnormed = jnp.exp(scores - safe_max[..., None])
    rescale = jnp.exp(max_BKGS - safe_max)
    acc_BKGSD = acc_BKGSD * rescale[..., None] + jnp.einsum(
        'bkgsc,bkcd->bkgsd', unnormed.astype(v_BKCD.dtype), v_BKCD, preferred_element_type=f32
    )
    return new_max, total_BKGS * rescale + jnp.sum(unnormed, axis=-1), acc_BKGSD

  shape = q_BKGSD.shape[:-1]
  init = (jnp.full(shape, -jnp.inf, f32), jnp.zeros(shape, f32), jnp.zeros(q_BKGSD.shape, f32))
  num_blocks = -(-jnp.max(end_B) // C)
  _, total_BKGS, acc_BKGSD = jax.lax.fori_loop(0, num_blocks, block, init)
  out_BKGSD = acc_BKGSD / jnp.where(total_BKGS > 0, total_BKGS, 1.0)[..., None]
  return einops.rearrange(out_BKGSD, 'b k g s d -> b s (k g) d').astype(q_BSHD.dtype)


def blockwise_attention(
    q_BSHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    key_valid_BS: jax.Array,
    block_size: int = BLOCK_SIZE,
    segments_BS: jax.Array | None = None,
) -> jax.Array:
  """Causal self-attention (query s at slot s) over keys marked by `key_valid_BS`, each
  query within its own segment when `segments_BS` is given (packed rows).

  S need not be a multiple of `block_size`: the sequence is padded with
  invalid keys and the padded queries are dropped.
  """
  B, S, H, Dh = q_BSHD.shape
  K = k_BSKD.shape[2]
  padded = -(-S // block_size) * block_size
  pad = lambda x: jnp.pad(x, [(0, 0), (0, padded - S)] + [(0, 0)] * (x.ndim - 2))
  # Heads first, sequence next to the head dim: the layout every block matmul wants.
  q_BKGSD = einops.rearrange(pad(q_BSHD), 'b s (k g) d -> b k g s d', k=K)
  k_BKSD, v_BKSD = (einops.rearrange(pad(x), 'b s k d -> b k s d') for x in (k_BSKD, v_BSKD))
  if segments_BS is None:
    segments_BS = jnp.zeros((B, S), jnp.int32)  # one segment: the mask is key_valid alone
  out_BKGSD = _blockwise(
      q_BKGSD, k_BKSD, v_BKSD, pad(key_valid_BS.astype(bool)), pad(segments_BS), block_size
  )
  return einops.rearrange(out_BKGSD, 'b k g s d -> b s (k g) d')[:, :S]


# --- the block-causal kernel and its VJP ------------------------------------------------
# Layouts: q, out [B, K, G, S, D]; k, v [B, K, S, D]; log-sum-exp [B, K, G, S].
# Block i holds queries [i*Q, (i+1)*Q) and sees keys [0, (i+1)*Q).


def _block_scores(q_BKGSD, kT_BKDS, key_valid_BS, segments_BS, i, block_size):
  """Block i's float32 scaled scores [B, K, G, Q, end], -inf where a key is not visible."""
  start, end = i * block_size, (i + 1) * block_size
  scores = jnp.einsum(
      'bkgqd,bkdt->bkgqt',
      q_BKGSD[:, :, :, start:end],
      kT_BKDS[..., :end],
      preferred_element_type=jnp.float32,
  ) * (q_BKGSD.shape[-1] ** -0.5)
  causal_QT = jnp.arange(end)[None, :] <= jnp.arange(start, end)[:, None]
  visible = causal_QT[None, None, None] & key_valid_BS[:, None, None, None, :end]
  same_segment_BQT = segments_BS[:, start:end, None] == segments_BS[:, None, :end]
  visible &= same_segment_BQT[:, None, None]
  return scores + jnp.where(visible, 0.0, -jnp.inf)


def _forward_blocks(q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, block_size):
  outs, lses = [], []
  kT_BKDS = jnp.swapaxes(k_BKSD, -1, -2)
  for i in range(q_BKGSD.shape[3] // block_size):
    scores = _block_scores(q_BKGSD, kT_BKDS, key_valid_BS, segments_BS, i, block_size)
    max_BKGQ = jnp.max(scores, axis=-1)
    max_BKGQ = jnp.where(jnp.isfinite(max_BKGQ), max_BKGQ, 0.0)  # a query that sees no key
    unnormed = jnp.exp(scores - max_BKGQ[..., None])
    total_BKGQ = jnp.sum(unnormed, axis=-1)
    inv_total = jnp.where(total_BKGQ > 0, 1.0 / total_BKGQ, 0.0)
    end = (i + 1) * block_size
    out = jnp.einsum(
        'bkgqt,bktd->bkgqd',
        unnormed.astype(v_BKSD.dtype),
        v_BKSD[:, :, :end],
        preferred_element_type=jnp.float32,
    )
    outs.append((out * inv_total[..., None]).astype(q_BKGSD.dtype))
    lses.append(max_BKGQ + jnp.log(jnp.where(total_BKGQ > 0, total_BKGQ, 1.0)))
  return jnp.concatenate(outs, axis=3), jnp.concatenate(lses, axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _blockwise(q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, block_size):
  return _forward_blocks(q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, block_size)[0]


def _blockwise_fwd(q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, block_size):
  out_BKGSD, lse_BKGS = _forward_blocks(
      q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, block_size
  )
  return out_BKGSD, (q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, out_BKGSD, lse_BKGS)


def _blockwise_bwd(block_size, residuals, dout_BKGSD):
  """Flash-attention backward: probabilities from the saved log-sum-exp, dS = P (dP - delta)."""
  q_BKGSD, k_BKSD, v_BKSD, key_valid_BS, segments_BS, out_BKGSD, lse_BKGS = residuals
  f32 = jnp.float32
  delta_BKGS = jnp.sum(dout_BKGSD.astype(f32) * out_BKGSD.astype(f32), axis=-1)
  scale = q_BKGSD.shape[-1] ** -0.5
  kT_BKDS = jnp.swapaxes(k_BKSD, -1, -2)
  vT_BKDS = jnp.swapaxes(v_BKSD, -1, -2).astype(f32)
  dq_blocks = []
  # dK and dV accumulate transposed: 'bkgqd,bkgqt->bkdt' reads the score block in its own
  # layout, where 'bkgqt,bkgqd->bktd' made XLA copy it transposed (with the exp recomputed).
  dkT_BKDS = jnp.zeros(vT_BKDS.shape, f32)
  dvT_BKDS = jnp.zeros(vT_BKDS.shape, f32)
  for i in range(q_BKGSD.shape[3] // block_size):
    start, end = i * block_size, (i + 1) * block_size
    scores = _block_scores(q_BKGSD, kT_BKDS, key_valid_BS, segments_BS, i, block_size)
    probs = jnp.exp(scores - lse_BKGS[:, :, :, start:end, None])
    dout = dout_BKGSD[:, :, :, start:end].astype(f32)
    dprobs = jnp.einsum('bkgqd,bkdt->bkgqt', dout, vT_BKDS[..., :end])
    dscores = probs * (dprobs - delta_BKGS[:, :, :, start:end, None]) * scale
    dq_blocks.append(jnp.einsum('bkgqt,bktd->bkgqd', dscores, k_BKSD[:, :, :end].astype(f32)))
    q_blk = q_BKGSD[:, :, :, start:end].astype(f32)
    dkT_BKDS = dkT_BKDS.at[..., :end].add(jnp.einsum('bkgqd,bkgqt->bkdt', q_blk, dscores))
    dvT_BKDS = dvT_BKDS.at[..., :end].add(jnp.einsum('bkgqd,bkgqt->bkdt', dout, probs))
  dq_BKGSD = jnp.concatenate(dq_blocks, axis=3)
  dk_BKSD, dv_BKSD = (jnp.swapaxes(x, -1, -2) for x in (dkT_BKDS, dvT_BKDS))
  return (
      dq_BKGSD.astype(q_BKGSD.dtype),
      dk_BKSD.astype(k_BKSD.dtype),
      dv_BKSD.astype(v_BKSD.dtype),
      None,
      None,
  )


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
