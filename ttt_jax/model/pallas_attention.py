"""JAX's Pallas flash-attention kernels behind attention.py's convention, segment ids included.

- `splash_attention` (TPU): `jax.experimental.pallas.ops.tpu.splash_attention`, a causal
  mask whose blocks above the diagonal are skipped, GQA native (q heads a multiple of kv
  heads), one row at a time under `jax.vmap`.
- `gpu_attention` (GPU, Triton): `jax.experimental.pallas.ops.gpu.attention.mha`, causal,
  k and v repeated to the query heads (the kernel takes equal head counts).

Both take one segment id per token, so padding becomes a segment of its own:
`ids = segment + 1` on real tokens (`segments_BS`, or one segment), 0 on padding, and the
sequence is padded to a multiple of the kernel's block with id-0 slots. A real query then
sees exactly what it sees in attention.py (earlier real keys of its segment); a padding
query sees only padding, and its output is set to zero. That is attention.py's value for
every padding query of a packed row; an unpacked row's right padding there attends to the
row's real keys instead. Neither reaches a real token's logits, a loss or a KV cache slot
a decode step reads (real queries never see padding keys), so the two kernels agree with
the others on everything the model uses (tests/model/test_pallas_attention.py).

`interpret=True` runs either kernel's Pallas program with the reference interpreter on any
backend: how the CPU tests run them, slowly, without the hardware.
"""

from __future__ import annotations

import functools
import warnings

import einops
import jax
import jax.numpy as jnp


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def block_and_length(seq_len: int, quantum: int, largest: int) -> tuple[int, int]:
  """(block, padded length): `seq_len` padded to a multiple of `quantum`, cut into the largest
  power-of-two block <= `largest` that divides it (both powers of two, largest >= quantum)."""
  padded = _round_up(seq_len, quantum)
  block = largest
  while padded % block:
    block //= 2
  return block, padded


# --- TPU: splash attention ---------------------------------------------------------------

# Blocks are multiples of the TPU's 128 lanes (splash's kv compute block must be); 512, the
# largest, is MaxText's default for every splash block. Unmeasured here (no TPU).
SPLASH_QUANTUM, SPLASH_LARGEST = 128, 512
SPLASH_BLOCK_FIELDS = (
    'block_q', 'block_kv', 'block_kv_compute', 'block_q_dkv', 'block_kv_dkv',
    'block_kv_dkv_compute', 'block_q_dq', 'block_kv_dq',
)  # fmt: skip


def splash_block(seq_len: int, head_dim: int) -> tuple[int, int]:
  """(block, padded length) of splash attention: one block size for every pass; a head_dim
  over 128 halves the largest (each q, k, v, o tile grows with it)."""
  return block_and_length(seq_len, SPLASH_QUANTUM, SPLASH_LARGEST // (1 + (head_dim > 128)))


@functools.cache
def splash_module():
  from jax.experimental.pallas.ops.tpu import splash_attention  # pylint: disable=import-outside-toplevel

  return splash_attention


def splash_attention(
    q_BSHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    key_valid_BS: jax.Array,
    segments_BS: jax.Array | None = None,
    *,
    interpret: bool = False,
) -> jax.Array:
  """Causal self-attention through splash attention (GQA: H a multiple of K)."""
  sa = splash_module()
  _, S, H, Dh = q_BSHD.shape
  block, padded = splash_block(S, Dh)
  ids_BS = _padded(_segment_ids(key_valid_BS, segments_BS), padded)
  blocks = sa.BlockSizes(**dict.fromkeys(SPLASH_BLOCK_FIELDS, block))  # forward, dq, dkv
  mask = sa.MultiHeadMask([sa.CausalMask((padded, padded))] * H)
  kernel = sa.make_splash_mha(
      mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
  )
  # Splash scales nothing: the softmax scale goes on q. Its layout is heads first.
  q_BHSD = einops.rearrange(_padded(q_BSHD * Dh**-0.5, padded), 'b s h d -> b h s d')
  k_BKSD, v_BKSD = (
      einops.rearrange(_padded(x, padded), 'b s k d -> b k s d') for x in (k_BSKD, v_BSKD)
  )
  one_row = lambda q, k, v, ids: kernel(q, k, v, segment_ids=sa.SegmentIds(ids, ids))
  out_BHSD = jax.vmap(one_row)(q_BHSD, k_BKSD, v_BKSD, ids_BS)
  return _zero_padding(einops.rearrange(out_BHSD, 'b h s d -> b s h d')[:, :S], key_valid_BS)


# --- GPU: Triton flash attention ---------------------------------------------------------

# The forward's tiles: 128 x 128 for head_dim <= 64, 64 x 64 above (each tile's k and v
# stream through shared memory, head_dim wide); the backward keeps jax's default 32.
# Starting points from jax's defaults and the Triton tutorial, unmeasured here.
GPU_QUANTUM, GPU_BACKWARD_BLOCK = 64, 32
GPU_MAX_HEAD_DIM = 256


def gpu_blocks(seq_len: int, head_dim: int):
  """(mha's BlockSizes, padded length) for a row of `seq_len` tokens."""
  block, padded = block_and_length(seq_len, GPU_QUANTUM, 128 if head_dim <= 64 else 64)
  return (
      gpu_module().BlockSizes(
          block_q=block,
          block_k=block,
          block_q_dkv=GPU_BACKWARD_BLOCK,
          block_kv_dkv=GPU_BACKWARD_BLOCK,
          block_q_dq=GPU_BACKWARD_BLOCK,
          block_kv_dq=GPU_BACKWARD_BLOCK,
      ),
      padded,
  )


@functools.cache
def gpu_module():
  # jax 0.11 deprecates the module (for tokamax) with a warning at import; same API.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    from jax.experimental.pallas.ops.gpu import attention  # pylint: disable=import-outside-toplevel
  return attention


def gpu_attention(
    q_BSHD: jax.Array,
    k_BSKD: jax.Array,
    v_BSKD: jax.Array,
    key_valid_BS: jax.Array,
    segments_BS: jax.Array | None = None,
    *,
    interpret: bool = False,
) -> jax.Array:
  """Causal self-attention through the Triton flash-attention kernel (GQA: H a multiple
  of K; k and v are repeated to H heads, their gradients summed back by `jnp.repeat`)."""
  _, S, H, Dh = q_BSHD.shape
  blocks, padded = gpu_blocks(S, Dh)
  groups = H // k_BSKD.shape[2]
  k_BSHD, v_BSHD = (_padded(jnp.repeat(x, groups, axis=2), padded) for x in (k_BSKD, v_BSKD))
  out_BSHD = gpu_module().mha(
      _padded(q_BSHD, padded),
      k_BSHD,
      v_BSHD,
      _padded(_segment_ids(key_valid_BS, segments_BS), padded),
      sm_scale=Dh**-0.5,
      causal=True,
      block_sizes=blocks,
      interpret=interpret,
  )
  return _zero_padding(out_BSHD[:, :S], key_valid_BS)


# --- shared -------------------------------------------------------------------------------


def _segment_ids(key_valid_BS: jax.Array, segments_BS: jax.Array | None) -> jax.Array:
  """segment + 1 on real tokens, 0 on padding (int32)."""
  segments_BS = jnp.zeros(key_valid_BS.shape, jnp.int32) if segments_BS is None else segments_BS
  return jnp.where(key_valid_BS.astype(bool), segments_BS.astype(jnp.int32) + 1, 0)


def _padded(x: jax.Array, length: int) -> jax.Array:
  """x with its sequence axis (1) zero-padded to `length`."""
  return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _zero_padding(out_BSHD: jax.Array, key_valid_BS: jax.Array) -> jax.Array:
  return jnp.where(key_valid_BS.astype(bool)[:, :, None, None], out_BSHD, 0).astype(out_BSHD.dtype)
