"""The LoRA projection's hand-written VJP == autodiff of x W + s (x a) b."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model.lora_ops import lora_project

TOL = 1e-5
I, O, R = 24, 40, 4  # distinct, so a W-gradient dot is recognisable in the HLO


def _reference(x, w, a, b, scale):
  xa = jnp.einsum('bsi,ir->bsr', x, a)
  return jnp.einsum('bsi,io->bso', x, w) + scale * jnp.einsum('bsr,ro->bso', xa, b)


def _operands(seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x, w, a, b = (
      jnp.asarray(0.3 * rng.normal(size=s), jnp.float32)  # O(1) values
      for s in ((2, 7, I), (I, O), (I, R), (R, O))
  )
  return x.astype(dtype), w, a, b


@pytest.mark.parametrize('scale', [2.0, 0.5])
def test_values_and_grads_match_autodiff(scale):
  x, w, a, b = _operands()
  cotangent = jax.random.normal(jax.random.key(1), (2, 7, O))
  got, got_vjp = jax.vjp(lambda *xs: lora_project(*xs, scale), x, w, a, b)
  want, want_vjp = jax.vjp(lambda *xs: _reference(*xs, scale), x, w, a, b)
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  for name, g, r in zip(('x', 'w', 'a', 'b'), got_vjp(cotangent), want_vjp(cotangent)):
    np.testing.assert_allclose(g, r, atol=TOL, rtol=0, err_msg=f'd{name}')
    assert np.abs(np.asarray(g)).max() > 0, name


def test_base_weight_gradient_is_not_computed():
  """Differentiating only x, a and b leaves no [I, O] weight-gradient matmul in the HLO."""
  x, w, a, b = _operands()
  loss = lambda x, a, b: jnp.sum(jnp.sin(lora_project(x, w, a, b, 2.0)))
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, a, b).compile().as_text()
  dots = [line for line in hlo.splitlines() if ' dot(' in line]
  assert dots, 'expected the matmuls in the HLO'
  assert not any(f'f32[{I},{O}]' in line for line in dots), dots
  # ... and the W gradient is right when asked for.
  got = jax.grad(lambda w: jnp.sum(jnp.sin(lora_project(x, w, a, b, 2.0))))(w)
  want = jax.grad(lambda w: jnp.sum(jnp.sin(_reference(x, w, a, b, 2.0))))(w)
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_bfloat16_activations_keep_dtypes():
  x, w, a, b = _operands(dtype=jnp.bfloat16)
  y, vjp = jax.vjp(lambda x, a, b: lora_project(x, w, a, b, 2.0), x, a, b)
  assert y.dtype == jnp.bfloat16
  dx, da, db = vjp(jnp.ones_like(y))
  assert (dx.dtype, da.dtype, db.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
  want = _reference(x.astype(jnp.float32), w, a, b, 2.0)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=0.15)


def test_a_traced_scale_per_row_equals_each_scale_alone():
  """The TTT step vmaps the projection over slots, each with its own scale (an operand,
  not a static float); the scale gets no gradient, and asking for one is refused."""
  x, w, a, b = _operands()
  scales = jnp.asarray([2.0, 0.5, 3.0])
  x_T = jnp.stack([x, 2 * x, -x])
  cotangent = jax.random.normal(jax.random.key(1), (2, 7, O))

  def grads(x, a, b, scale):
    return jax.vjp(lambda x, a, b: lora_project(x, w, a, b, scale), x, a, b)[1](cotangent)

  got = jax.jit(jax.vmap(grads, in_axes=(0, None, None, 0)))(x_T, a, b, scales)
  for t, scale in enumerate([2.0, 0.5, 3.0]):
    want = jax.vjp(lambda x, a, b: _reference(x, w, a, b, scale), x_T[t], a, b)[1](cotangent)
    for name, g, r in zip(('x', 'a', 'b'), got, want):
      np.testing.assert_allclose(g[t], r, atol=TOL, rtol=0, err_msg=f'd{name} slot {t}')
  with pytest.raises(ValueError, match='scale cannot be differentiated'):
    jax.grad(lambda s: jnp.sum(lora_project(x, w, a, b, s)))(2.0)
