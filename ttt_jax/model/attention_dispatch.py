"""Which attention kernel a forward runs, chosen once per trace by backend, dtype and shape.

`ModelConfig.attention_impl` ('auto' | 'cudnn' | 'splash' | 'pallas_gpu' | 'xla' |
'blockwise') names it; `choose` turns 'auto' into one of the others, with the reason
(`python -m launch.doctor` prints both):

| backend | unpacked rows | packed rows (segment ids) |
|---|---|---|
| cpu | blockwise | blockwise |
| gpu | cudnn (bf16 / fp16, head_dim % 8 == 0 and <= 128), else xla | pallas_gpu (head_dim <= 256), else xla |
| tpu | splash | splash |
| any other | xla | xla |

- 'blockwise': `attention.blockwise_attention`, block-causal with a recomputing custom
  VJP (what the 2-core CPU runs fastest).
- 'cudnn' / 'xla': `jax.nn.dot_product_attention(implementation=...)`: cuDNN's
  flash attention on NVIDIA GPUs, or XLA's masked softmax. Both get the same
  arguments (`dot_product_attention` below), so the CPU tests of 'xla' cover
  everything but cuDNN's kernel. cuDNN gets sequence lengths through that call, not
  segment ids: packed rows cannot run it.
- 'splash' (TPU) / 'pallas_gpu' (NVIDIA GPU, Triton): JAX's Pallas flash-attention
  kernels, which take segment ids (pallas_attention.py); on a CPU they run in
  Pallas' interpret mode (slow: for the tests).
- A prompt prefilled into an empty KV cache attends to itself: it runs the kernel
  chosen here too. Decode steps over a filled cache run `attention.cached_attention`.

All keep the convention of attention.py: query s sees key t iff t <= s, key t is
real (and, in packed rows, in s's segment); a query that sees no key outputs zeros
('splash' and 'pallas_gpu' zero every padding query: pallas_attention.py says why
that changes nothing the model reads).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ttt_jax.model import attention, pallas_attention
from ttt_jax.model.config import ATTENTION_IMPLS

CUDNN_DTYPES = ('bfloat16', 'float16')
CUDNN_MAX_HEAD_DIM = 128  # every CUDA GPU cuDNN's flash attention runs on (Hopper: 256)
# The backend each Pallas kernel is written for; on a CPU it runs interpreted.
PALLAS_BACKEND = {'splash': 'tpu', 'pallas_gpu': 'gpu'}


@dataclasses.dataclass(frozen=True)
class Choice:
  kernel: str  # 'cudnn', 'splash', 'pallas_gpu', 'xla' or 'blockwise'
  why: str


def cudnn_problem(compute_dtype: str, head_dim: int, segmented: bool = False) -> str | None:
  """Why cuDNN's flash attention cannot run this model, or None when it can."""
  if compute_dtype not in CUDNN_DTYPES:
    return f'needs compute_dtype in {CUDNN_DTYPES}, got {compute_dtype!r}'
  if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
    return f'needs head_dim a multiple of 8 and <= {CUDNN_MAX_HEAD_DIM}, got {head_dim}'
  if segmented:  # jax.nn.dot_product_attention passes cuDNN lengths, not segments
    return 'takes no segment ids (packed rows); use attention=auto or xla'
  return None


def pallas_problem(kernel: str, head_dim: int) -> str | None:
  """Why this jax cannot run Pallas kernel `kernel` ('splash' | 'pallas_gpu') at this
  head_dim, or None when it can."""
  if kernel == 'pallas_gpu' and head_dim > pallas_attention.GPU_MAX_HEAD_DIM:
    return f'needs head_dim <= {pallas_attention.GPU_MAX_HEAD_DIM}, got {head_dim}'
  return _import_problem(kernel)


@functools.cache
def _import_problem(kernel: str) -> str | None:
  try:
    pallas_attention.splash_module() if kernel == 'splash' else pallas_attention.gpu_module()
  except ImportError as e:  # a jax that moved or dropped it (0.11 deprecates the GPU one)
    return f'is not in jax {jax.__version__}: {e}'
  return None


def choose(
    impl: str, backend: str, compute_dtype: str, head_dim: int, segmented: bool = False
) -> Choice:
  """The kernel `impl` means on `backend` (jax.default_backend()) for rows with segment
  ids (`segmented`: packed examples) or without, and why."""
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f'attention must be one of {ATTENTION_IMPLS}, got {impl!r}')
  if impl == 'auto':
    return _auto(backend, compute_dtype, head_dim, segmented)
  if impl == 'cudnn':
    if backend != 'gpu':
      raise ValueError(f"attention='cudnn' needs an NVIDIA GPU; this backend is {backend!r}")
    if problem := cudnn_problem(compute_dtype, head_dim, segmented):
      raise ValueError(f"attention='cudnn' {problem}")
  if impl in PALLAS_BACKEND:
    if backend not in (PALLAS_BACKEND[impl], 'cpu'):
      raise ValueError(
          f'attention={impl!r} needs a {PALLAS_BACKEND[impl].upper()} (or a CPU, interpreted); '
          f'this backend is {backend!r}'
      )
    if problem := pallas_problem(impl, head_dim):
      raise ValueError(f'attention={impl!r} {problem}')
    if backend == 'cpu':
      return Choice(impl, 'named by model.attention; on a CPU in Pallas interpret mode (slow)')
  return Choice(impl, 'named by model.attention')


def _auto(backend: str, compute_dtype: str, head_dim: int, segmented: bool) -> Choice:
  rows = 'packed rows' if segmented else 'unpacked rows'
  if backend == 'cpu':
    return Choice('blockwise', 'CPU: block-causal with a recomputing VJP, fastest there')
  if backend == 'tpu':
    if problem := pallas_problem('splash', head_dim):
      return Choice('xla', f'TPU: splash attention {problem}')
    return Choice('splash', f'TPU, {rows}: Pallas splash attention (skips masked blocks)')
  if backend != 'gpu':
    return Choice('xla', f'{backend}: no flash kernel of ours')
  if not segmented:
    if problem := cudnn_problem(compute_dtype, head_dim):
      return Choice('xla', f"GPU: cuDNN's flash attention {problem}")
    return Choice('cudnn', "GPU, unpacked rows: cuDNN's flash attention (sequence lengths)")
  if problem := pallas_problem('pallas_gpu', head_dim):
    return Choice('xla', f'GPU, packed rows: cuDNN takes no segment ids, Pallas {problem}')
  return Choice('pallas_gpu', 'GPU, packed rows: cuDNN takes no segment ids; Pallas (Triton)')


def resolve(
    impl: str, backend: str, compute_dtype: str, head_dim: int, segmented: bool = False
) -> str:
  """The kernel of `choose`."""
  return choose(impl, backend, compute_dtype, head_dim, segmented).kernel


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
  backend = jax.default_backend()
  kernel = resolve(impl, backend, compute_dtype, q_BSHD.shape[-1], segmented)
  args = (q_BSHD, k_BSKD, v_BSKD, key_valid_BS, segments_BS)
  if kernel == 'blockwise':
    return attention.blockwise_attention(*args[:4], segments_BS=segments_BS)
  if kernel == 'splash':
    return pallas_attention.splash_attention(*args, interpret=backend == 'cpu')
  if kernel == 'pallas_gpu':
    return pallas_attention.gpu_attention(*args, interpret=backend == 'cpu')
  return dot_product_attention(*args[:4], kernel, segments_BS)
