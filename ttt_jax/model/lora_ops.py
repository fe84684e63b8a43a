"""The LoRA projection `y = x W + scale (x a) b` with a hand-ordered backward.

Autodiff of the three einsums made XLA (on CPU) transpose the large [tokens,
out] output gradient to form the b gradient, and the large [tokens, in] input
(recomputing SiLU inside the copy for `down`) to form the a gradient. The
custom VJP writes every token-contracting matmul as (small)^T-producing
`'n?,n?->??'` with the rank on the side that makes the result [r, *] or
[*, r], so only the small result gets transposed, if anything.
The base weight's gradient is computed only when W is differentiated (full
fine-tuning); the TTT step never asks, so no W-gradient matmul is traced. A quantized
W (quant.QuantizedWeight, QLoRA) is dequantized in the forward and again in the
backward: the residual is the quantized weight, and it is never differentiated.
The scale is an operand, not a static number, so the TTT step's slots can each have their
own (a sweep of alpha or rank); it is never differentiated either.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ttt_jax.model import quant


def lora_project(
    x_NI: jax.Array, w_IO: jax.Array, a_IR: jax.Array, b_RO: jax.Array, scale
) -> jax.Array:
  """x W + scale (x a) b over any leading axes of x; computed in x's dtype. `scale` is a
  float or a float32 scalar array (a traced per-slot value in the TTT step's sweeps); it
  is never differentiated."""
  *lead, fan_in = x_NI.shape
  scale = jnp.asarray(scale, jnp.float32)
  y_NO = _lora_project(x_NI.reshape(-1, fan_in), w_IO, a_IR, b_RO, scale)
  return y_NO.reshape(*lead, w_IO.shape[-1])


def _forward(x_NI, w_IO, a_IR, b_RO, scale):
  dtype = x_NI.dtype
  xa_NR = x_NI @ a_IR.astype(dtype)
  y_NO = x_NI @ quant.dense(w_IO, dtype) + (scale.astype(dtype) * xa_NR) @ b_RO.astype(dtype)
  return y_NO, xa_NR


@jax.custom_vjp
def _lora_project(x_NI, w_IO, a_IR, b_RO, scale):
  return _forward(x_NI, w_IO, a_IR, b_RO, scale)[0]


def _lora_project_fwd(x_NI, w_IO, a_IR, b_RO, scale):
  """With symbolic zeros each operand says whether it is differentiated: the frozen base
  weight usually is not, and then its gradient matmul is never even traced."""
  w_perturbed = any(p.perturbed for p in jax.tree.leaves(w_IO, is_leaf=_is_primal))
  scale_perturbed = scale.perturbed
  wants_dw = () if w_perturbed else None  # an empty pytree either way: a static flag
  x_NI, w_IO, a_IR, b_RO, scale = jax.tree.map(
      lambda p: p.value, (x_NI, w_IO, a_IR, b_RO, scale), is_leaf=_is_primal
  )
  if w_perturbed and quant.is_quantized(w_IO):
    raise ValueError('lora_project: a quantized base weight cannot be differentiated')
  if scale_perturbed:
    raise ValueError('lora_project: the LoRA scale cannot be differentiated')
  y_NO, xa_NR = _forward(x_NI, w_IO, a_IR, b_RO, scale)
  return y_NO, (x_NI, w_IO, a_IR, b_RO, scale, xa_NR, wants_dw)


def _lora_project_bwd(residuals, dy_NO):
  x_NI, w_IO, a_IR, b_RO, scale, xa_NR, wants_dw = residuals
  if isinstance(dy_NO, jax.custom_derivatives.SymbolicZero):
    return None, None, None, None, None
  dtype = x_NI.dtype
  f32 = jnp.float32
  a, b = a_IR.astype(dtype), b_RO.astype(dtype)
  dxa_NR = scale.astype(dtype) * (dy_NO @ b.T)  # b.T is [O, r]: a tiny copy
  dx_NI = dy_NO @ quant.dense(w_IO, dtype).T + dxa_NR @ a.T
  # Contract over tokens with the big operand on the right, the rank on the left.
  da_IR = jnp.einsum('nr,ni->ri', dxa_NR, x_NI, preferred_element_type=f32).T
  db_RO = scale * jnp.einsum('nr,no->ro', xa_NR, dy_NO, preferred_element_type=f32)
  dw_IO = None
  if wants_dw is not None:
    dw_IO = jnp.einsum('ni,no->io', x_NI, dy_NO, preferred_element_type=f32).astype(w_IO.dtype)
  # The scale is a constant of the training: no cotangent (the forward refuses to be
  # differentiated with respect to it).
  return (dx_NI.astype(x_NI.dtype), dw_IO, da_IR.astype(a_IR.dtype), db_RO.astype(b_RO.dtype), None)


def _is_primal(x) -> bool:
  return isinstance(x, jax.custom_derivatives.CustomVJPPrimal)


_lora_project.defvjp(_lora_project_fwd, _lora_project_bwd, symbolic_zeros=True)
