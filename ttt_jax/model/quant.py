"""A frozen base held in 4-bit NormalFloat (QLoRA's NF4) or int8, dequantized inside each
projection's matmul, LoRA on top (`ModelSpec.quantize`: the paper's QLoRA arm).

A weight [..., in, out] (layers stacked on a leading axis) is flattened per matrix,
zero-padded to whole blocks of BLOCK = 64 values (QLoRA's block) and stored as
  nf4   uint8 codes, two 4-bit indices into the NF4 table per byte (the first in the
        high nibble, as bitsandbytes packs them), and each block's absmax in float32:
        4.5 bits a weight;
  int8  int8 codes round(127 w / absmax) and the same absmaxes: 8.5 bits a weight.
A value is the nearest code, so |w - dequantized w| <= half the widest gap of the code
table x its block's absmax (nf4: 0.152 absmax; int8: absmax / 254). With double
quantization (QLoRA's, `double_quant`) the absmaxes are stored again in 8 bits: their
mean subtracted, int8 codes in blocks of 256 with a float32 absmax each (a linear
code where bitsandbytes uses its dynamic 8-bit map): 4.127 bits a nf4 weight.

`quantize_params` turns the seven projections of `params['layers']` into
`QuantizedWeight` leaves (embedding, LM head and norms stay as they are); `llama.project`
dequantizes one layer's matrix in the compute dtype right before its matmul, and the
backward passes (`matmul` here, `lora_ops.lora_project`) dequantize it again rather
than keep it: the dense weight of a layer lives only while that layer runs. The base is
never differentiated (its cotangent is None).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

KINDS = ('nf4', 'int8')
BLOCK = 64  # weights per absmax (QLoRA's blocksize for NF4)
SCALE_BLOCK = 256  # absmaxes per second-level scale with double quantization (QLoRA's)
# bitsandbytes' NF4 code (functional.get_4bit_type('nf4'); csrc dDequantizeNF4): the
# quantiles of N(0, 1) of create_normal_map(offset=0.9677083), normalised to [-1, 1].
NF4 = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    np.float32,
)
NF4_MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2  # a value above midpoint k takes code k + 1
INT8_MAX = 127


@struct.dataclass
class DoubleQuantScales:
  """Block absmaxes [..., num_blocks] in 8 bits: `offset` [...] (their mean) subtracted,
  int8 codes in blocks of SCALE_BLOCK, each block with its float32 absmax."""

  codes: jax.Array  # int8 [..., ceil(num_blocks / SCALE_BLOCK) * SCALE_BLOCK]
  absmax: jax.Array  # float32 [..., ceil(num_blocks / SCALE_BLOCK)]
  offset: jax.Array  # float32 [...]
  num_blocks: int = struct.field(pytree_node=False)

  def values(self) -> jax.Array:
    """The absmaxes, float32 [..., num_blocks]."""
    centred = _int8_values(self.codes, self.absmax, SCALE_BLOCK)[..., : self.num_blocks]
    return centred + self.offset[..., None]


@struct.dataclass
class QuantizedWeight:
  """A weight [..., in, out] in blocks of BLOCK (the module docstring). Array leaves keep
  the weight's leading axes, so the layer scan slices it like any stacked weight."""

  codes: jax.Array  # nf4: uint8 [..., n / 2]; int8: int8 [..., n] (n: whole blocks)
  scales: jax.Array | DoubleQuantScales  # each block's absmax, float32 [..., n / BLOCK]
  kind: str = struct.field(pytree_node=False)  # one of KINDS
  shape: tuple[int, int] = struct.field(pytree_node=False)  # (in, out) of one matrix
  dtype: str = struct.field(pytree_node=False)  # the weight's dtype before quantization


def _blocks(flat: jax.Array, block: int) -> jax.Array:
  """[..., n] float32 -> [..., ceil(n / block), block], zero-padded."""
  pad = -flat.shape[-1] % block
  flat = jnp.pad(flat, [(0, 0)] * (flat.ndim - 1) + [(0, pad)])
  return flat.reshape(*flat.shape[:-1], -1, block)


def _absmax_normed(flat: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
  """(values / their block's absmax [..., blocks, block], absmax [..., blocks]); an
  all-zero block keeps absmax 0 and normalised zeros."""
  blocks = _blocks(flat, block)
  absmax = jnp.max(jnp.abs(blocks), axis=-1)
  return blocks / jnp.where(absmax == 0, 1.0, absmax)[..., None], absmax


def _int8_codes(flat: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
  normed, absmax = _absmax_normed(flat, block)
  codes = jnp.round(normed * INT8_MAX).astype(jnp.int8)
  return codes.reshape(*codes.shape[:-2], -1), absmax


def _scaled(normed: jax.Array, absmax: jax.Array, block: int) -> jax.Array:
  """Values in [-1, 1], [..., blocks * block], times their block's absmax [..., blocks]."""
  blocks = normed.reshape(*normed.shape[:-1], -1, block) * absmax[..., None]
  return blocks.reshape(*blocks.shape[:-2], -1)


def _int8_values(codes: jax.Array, absmax: jax.Array, block: int) -> jax.Array:
  return _scaled(codes.astype(jnp.float32) / INT8_MAX, absmax, block)


def _nf4_codes(flat: jax.Array) -> tuple[jax.Array, jax.Array]:
  normed, absmax = _absmax_normed(flat, BLOCK)
  index = jnp.searchsorted(jnp.asarray(NF4_MIDPOINTS), normed, side='left').astype(jnp.uint8)
  index = index.reshape(*index.shape[:-2], -1)
  return (index[..., 0::2] << 4) | index[..., 1::2], absmax


def _nf4_values(codes: jax.Array, absmax: jax.Array) -> jax.Array:
  index = jnp.stack([codes >> 4, codes & 15], axis=-1).reshape(*codes.shape[:-1], -1)
  return _scaled(jnp.asarray(NF4)[index], absmax, BLOCK)


def _double_quant(absmax: jax.Array) -> DoubleQuantScales:
  offset = jnp.mean(absmax, axis=-1)
  codes, scale = _int8_codes(absmax - offset[..., None], SCALE_BLOCK)
  return DoubleQuantScales(codes, scale, offset, absmax.shape[-1])


def _quantize_matrices(w: jax.Array, kind: str, double_quant: bool) -> QuantizedWeight:
  *lead, fan_in, fan_out = w.shape
  flat = w.reshape(*lead, fan_in * fan_out).astype(jnp.float32)
  codes, absmax = _nf4_codes(flat) if kind == 'nf4' else _int8_codes(flat, BLOCK)
  scales = _double_quant(absmax) if double_quant else absmax
  return QuantizedWeight(codes, scales, kind, (fan_in, fan_out), str(w.dtype))


@functools.partial(jax.jit, static_argnames=('kind', 'double_quant'))
def quantize(w: jax.Array, kind: str = 'nf4', double_quant: bool = False) -> QuantizedWeight:
  """A weight [..., in, out] as a QuantizedWeight, one matrix at a time (lax.map over the
  leading axes: the float32 temporaries of one matrix, never of the whole stack)."""
  return _quantize(w, kind, double_quant)


def _quantize(w: jax.Array, kind: str, double_quant: bool) -> QuantizedWeight:
  if kind not in KINDS:
    raise ValueError(f'quantize: kind {kind!r} is not one of {KINDS}')
  if w.ndim == 2:
    return _quantize_matrices(w, kind, double_quant)
  lead = w.shape[:-2]
  per_matrix = jax.lax.map(
      lambda m: _quantize_matrices(m, kind, double_quant), w.reshape(-1, *w.shape[-2:])
  )
  return jax.tree.map(lambda x: x.reshape(*lead, *x.shape[1:]), per_matrix)


def dequantize(w: QuantizedWeight, dtype=None) -> jax.Array:
  """The weight [..., in, out] in `dtype` (default: its dtype before quantization)."""
  absmax = w.scales.values() if isinstance(w.scales, DoubleQuantScales) else w.scales
  if w.kind == 'nf4':
    flat = _nf4_values(w.codes, absmax)
  else:
    flat = _int8_values(w.codes, absmax, BLOCK)
  size = math.prod(w.shape)
  values = flat[..., :size].reshape(*flat.shape[:-1], *w.shape)
  return values.astype(w.dtype if dtype is None else dtype)


def is_quantized(w) -> bool:
  return isinstance(w, QuantizedWeight)


def dense(w, dtype) -> jax.Array:
  """A weight as a dense array in `dtype`, dequantized if it is quantized."""
  return dequantize(w, dtype) if is_quantized(w) else w.astype(dtype)


@functools.partial(jax.jit, static_argnames=('kind', 'double_quant'))
def quantize_params(params: dict, kind: str, double_quant: bool = False) -> dict:
  """params with every projection matrix of the layers ([L, in, out]: the seven of
  lora.TARGETS) quantized, embedding, LM head and norms kept; one compiled program. The
  dense base and the quantized one are both alive while it runs."""
  layers = {
      name: _quantize(w, kind, double_quant) if w.ndim == 3 else w
      for name, w in params['layers'].items()
  }
  return {**params, 'layers': layers}


@jax.jit
def dequantize_params(params: dict) -> dict:
  """params with every quantized weight dense again (in its dtype before quantization)."""
  return jax.tree.map(
      lambda w: dequantize(w) if is_quantized(w) else w, params, is_leaf=is_quantized
  )


# ------------------------------------------------------------------ the matmul


@jax.custom_vjp
def matmul(x_NI: jax.Array, w: QuantizedWeight) -> jax.Array:
  """x W over any leading axes of x, W dequantized in x's dtype."""
  return jnp.einsum('...i,io->...o', x_NI, dequantize(w, x_NI.dtype))


def _matmul_fwd(x_NI, w):
  return matmul(x_NI, w), w  # the quantized weight is the residual, not the dense one


def _matmul_bwd(w, dy_NO):
  dx_NI = jnp.einsum('...o,io->...i', dy_NO, dequantize(w, dy_NO.dtype))
  return dx_NI, None  # the frozen base: no cotangent


matmul.defvjp(_matmul_fwd, _matmul_bwd)
