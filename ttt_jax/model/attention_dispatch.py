"""Which attention kernel a forward runs, chosen once per trace by backend, dtype and shape.

`ModelConfig.attention_impl` ('auto' | 'cudnn' | 'xla' | 'blockwise') names it;
`resolve` turns 'auto' into one of the others:

| backend | bf16 / fp16 compute, head_dim % 8 == 0 and <= 128, no segment ids | otherwise |
|---|---|---|
| cpu | blockwise | blockwise |
| gpu | cudnn | xla |
| tpu (and any other) | xla | xla |

Segment ids (packed rows, `segments_BS`) are what cuDNN cannot take through
`jax.nn.dot_product_attention` (it takes sequence lengths): packed rows run
XLA's softmax on a GPU.

- 'blockwise': `attention.blockwise_attention`, block-causal with a recomputing
  custom VJP (what the 2-core CPU runs fastest).
- 'cudnn' / 'xla': `jax.nn.dot_product_attention(implementation=...)`: cuDNN's
  flash attention on NVIDIA GPUs, or XLA's masked softmax. Both get the same
  arguments (`dot_product_attention` below), so the CPU tests of 'xla' cover
  everything but cuDNN's kernel.
- A prompt prefilled into an empty KV cache attends to itself: it runs the kernel
  chosen here too. Decode steps over a filled cache run `attention.cached_attention`.

All keep the convention of attention.py: query s sees key t iff t <= s, key t is
real (and, in packed rows, in s's segment); a query that sees no key outputs zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttt_jax.model import attention
from ttt_jax.model.config import ATTENTION_IMPLS

CUDNN_DTYPES = ('bfloat16', 'float16')
CUDNN_MAX_HEAD_DIM = 128  # every CUDA GPU cuDNN's flash attention runs on (Hopper: 256)


def cudnn_problem(compute_dtype: str, head_dim: int, segmented: bool = False) -> str | None:
  """Why cuDNN's flash attention cannot run this model, or None when it can."""
  if compute_dtype not in CUDNN_DTYPES:
    return f'needs compute_dtype in {CUDNN_DTYPES}, got {compute_dtype!r}'
  if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
    return f'needs head_dim a multiple of 8 and <= {CUDNN_MAX_HEAD_DIM}, got {head_dim}'
  if segmented:  # jax.nn.dot_product_attention passes cuDNN lengths, not segments
    return 'takes no segment ids (packed rows); use attention=auto or xla'
  return None


def resolve(
    impl: str, backend: str, compute_dtype: str, head_dim: int, segmented: bool = False
) -> str:
  """'cudnn', 'xla' or 'blockwise': what `impl` means on `backend` (jax.default_backend())
  for rows with segment ids (`segmented`: packed examples) or without."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f'attention must be one of {ATTENTION_IMPLS}, got {impl!r}')
  problem = cudnn_problem(compute_dtype, head_dim, segmented)
  if impl == 'cudnn':
    if backend != 'gpu':
      raise ValueError(f"attention='cudnn' needs an NVIDIA GPU; this backend is {backend!r}")
    if problem:
      raise ValueError(f"attention='cudnn' {problem}")
  if impl != 'auto':
    return impl
  if backend == 'cpu':
    return 'blockwise'
  if backend == 'gpu' and problem is None:
    return 'cudnn'
  return 'xla'


def dot_product_attention(
    q_BSHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    key_valid_BS: jax.Array,
    implementation: str,
    segments_BS: jax.Array | None = None,
) -> jax.Array:
  """Causal self-attention through `jax.nn.dot_product_attention` (GQA: H a multiple of K).

  cuDNN takes padding only as sequence lengths (a boolean mask would become a dense
  [B, 1, S, S] bias), so each row's real tokens, one contiguous span (the padding
  contract of llama.forward), are rolled to start at slot 0, attended with
  `key_value_seq_lengths`, and rolled back. A query before its row's first real
  token (left padding) sees no key: zeros.
  With `segments_BS` (packed rows; XLA only) a query also sees only its own segment,
  through a boolean [B, 1, S, S] mask.
  """
  B, S = key_valid_BS.shape
  valid_BS = key_valid_BS.astype(bool)
  if segments_BS is not None:
    return _segment_attention(q_BSHD, k_BSKD, v_BSKD, valid_BS, segments_BS, implementation)
  start_B = jnp.argmax(valid_BS, axis=1).astype(jnp.int32)
  length_B = jnp.sum(valid_BS, axis=1, dtype=jnp.int32)
  slots_S = jnp.arange(S, dtype=jnp.int32)
  take = lambda x, slot_BS: jnp.take_along_axis(x, slot_BS[:, :, None, None], axis=1)
  to_span_BS = (slots_S[None, :] + start_B[:, None]) % S  # rolled slot j holds slot j + start
  out_BSHD = jax.nn.dot_product_attention(
      take(q_BSHD, to_span_BS),
      take(k_BSKD, to_span_BS),
      take(v_BSKD, to_span_BS),
      is_causal=True,
      # Every query is computed. Both lengths are derived from the mask so that under vmap
      # they are batched like q (jax's cuDNN batching rule fails on unbatched lengths).
      query_seq_lengths=jnp.maximum(length_B, S),
      # An all-padding row attends to one (padding) key: finite, then zeroed below.
      key_value_seq_lengths=jnp.maximum(length_B, 1),
      implementation=implementation,
  )
  out_BSHD = take(out_BSHD, (slots_S[None, :] - start_B[:, None]) % S)
  sees_a_key_BS = slots_S[None, :] >= start_B[:, None]
  sees_a_key_BS &= length_B[:, None] > 0
  return jnp.where(sees_a_key_BS[:, :, None, None], out_BSHD, 0).astype(q_BSHD.dtype)


def _segment_attention(q_BSHD, k_BSKD, v_BSKD, valid_BS, segments_BS, implementation):
  S = valid_BS.shape[1]
  causal_SS = jnp.arange(S)[None, :] <= jnp.arange(S)[:, None]
  visible_BSS = segments_BS[:, :, None] == segments_BS[:, None, :]
  visible_BSS &= valid_BS[:, None, :] & causal_SS[None]
  out_BSHD = jax.nn.dot_product_attention(
      q_BSHD, k_BSKD, v_BSKD, mask=visible_BSS[:, None], implementation=implementation
  )
  sees_a_key_BS = jnp.any(visible_BSS, axis=-1)
  return jnp.where(sees_a_key_BS[:, :, None, None], out_BSHD, 0).astype(q_BSHD.dtype)


def attend(
    q_BSHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    key_valid_BS: jax.Array,
    segments_BS: jax.Array | None = None,
    *,
    impl: str,
    compute_dtype: str,
) -> jax.Array:
  """Causal self-attention of a full sequence (or a prompt into an empty KV cache) with the
  kernel `resolve` picks. `segments_BS` (packed rows) keeps each query within its segment."""
  segmented = segments_BS is not None
  kernel = resolve(impl, jax.default_backend(), compute_dtype, q_BSHD.shape[-1], segmented)
  if kernel == 'blockwise':
    return attention.blockwise_attention(
        q_BSHD, k_BSKD, v_BSKD, key_valid_BS, segments_BS=segments_BS
    )
  return dot_product_attention(q_BSHD, k_BSKD, v_BSKD, key_valid_BS, kernel, segments_BS)
