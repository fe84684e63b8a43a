"""QLoRA's frozen base: the NF4 code, quantize -> dequantize error bounds, and a quantized
forward / LoRA path equal to the same model on the dequantized weights."""

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import builtin, llama, quant
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS, LoraConfig, init_lora, merge_lora

# bitsandbytes' published NF4 values: bitsandbytes/functional.py get_4bit_type('nf4') (the
# same constants as csrc/kernels.cu dDequantizeNF4), copied here four a row.
# fmt: off
BITSANDBYTES_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
# fmt: on
MODEL = ModelConfig.preset('tiny').replace(
    hidden_size=32, intermediate_size=80, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16
)


def _weights(shape=(2, 12, 50), seed=0):
  """Normal weights with a few outliers (blocks of very different absmax); 600 a matrix:
  9 blocks of 64 and one of 24 zero-padded."""
  w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
  w[0, 0, :5] = [9.0, -7.0, 0.0, 0.0, 3.0]
  return jnp.asarray(w)


def _block_absmax(w):
  """Each weight's block absmax, as quant blocks the flattened matrix (zero-padded)."""
  lead, n = w.shape[:-2], w.shape[-2] * w.shape[-1]
  flat = np.pad(np.asarray(w).reshape(*lead, n), [(0, 0)] * len(lead) + [(0, -n % quant.BLOCK)])
  blocks = flat.reshape(*lead, -1, quant.BLOCK)
  absmax = np.repeat(np.abs(blocks).max(-1), quant.BLOCK, axis=-1)[..., :n]
  return absmax.reshape(w.shape)


def test_nf4_table_is_bitsandbytes_and_the_normal_quantiles():
  np.testing.assert_array_equal(quant.NF4, np.float32(BITSANDBYTES_NF4))
  # QLoRA's construction (bitsandbytes create_normal_map(offset=0.9677083)): 8 positive and
  # 7 negative quantiles of N(0, 1) at evenly spaced probabilities, zero, scaled to [-1, 1].
  ppf, offset = statistics.NormalDist().inv_cdf, 0.9677083
  positive = [ppf(float(p)) for p in np.linspace(offset, 0.5, 9, dtype=np.float32)[:-1]]
  negative = [-ppf(float(p)) for p in np.linspace(offset, 0.5, 8, dtype=np.float32)[:-1]]
  derived = np.sort(np.float32(positive + [0.0] + negative))
  np.testing.assert_allclose(quant.NF4, derived / derived.max(), atol=1e-6, rtol=0)


def test_nf4_round_trip_is_the_nearest_code_within_half_the_widest_gap():
  w = _weights()
  q = quant.quantize(w, 'nf4')
  assert q.codes.dtype == np.uint8 and q.codes.shape == (2, 10 * quant.BLOCK // 2)
  assert q.scales.shape == (2, 10)  # 4 bits a weight + a float32 per 64: 4.5 bits
  back, absmax = np.asarray(quant.dequantize(q)), _block_absmax(w)
  error = np.abs(back - np.asarray(w))
  half_gap = np.diff(quant.NF4).max() / 2  # 0.1519
  assert (error <= half_gap * absmax * (1 + 1e-6) + 1e-7).all() and error.max() > 1e-2
  # Each value is the code nearest to w / absmax (ties aside).
  normed = np.asarray(w) / np.where(absmax == 0, 1, absmax)
  nearest = quant.NF4[np.abs(normed[..., None] - quant.NF4).argmin(-1)]
  np.testing.assert_allclose(back, nearest * absmax, atol=1e-6, rtol=1e-6)
  # bitsandbytes' packing: the first of two weights in the high nibble.
  two = quant.quantize(jnp.array([[-1.0, 1.0]]), 'nf4')  # codes 0 and 15, one padded block
  assert int(two.codes[0]) == 0x0F and int(two.scales[0]) == 1


def test_int8_round_trip_within_half_a_step():
  w = _weights()
  q = quant.quantize(w, 'int8')
  assert q.codes.dtype == np.int8 and q.codes.shape == (2, 10 * quant.BLOCK)
  error = np.abs(np.asarray(quant.dequantize(q)) - np.asarray(w))
  assert (error <= _block_absmax(w) / (2 * quant.INT8_MAX) * (1 + 1e-5) + 1e-7).all()
  assert error.max() > 0


def test_double_quantization_bounds_the_scales_error_too():
  w = _weights()
  plain, double = quant.quantize(w, 'nf4'), quant.quantize(w, 'nf4', double_quant=True)
  assert isinstance(double.scales, quant.DoubleQuantScales)
  absmax = np.asarray(plain.scales)  # [2, 10]: one second-level block per matrix
  approx = np.asarray(double.scales.values())
  centred = absmax - absmax.mean(-1, keepdims=True)
  bound = np.abs(centred).max(-1, keepdims=True) / (2 * quant.INT8_MAX)
  assert (np.abs(approx - absmax) <= bound * (1 + 1e-5) + 1e-7).all()
  # The weights then within half a gap of the approximate absmax, plus its own error.
  np.testing.assert_array_equal(double.codes, plain.codes)
  per_weight = lambda x: np.repeat(x, quant.BLOCK, -1)[..., :600].reshape(w.shape)
  half_gap = np.diff(quant.NF4).max() / 2
  error = np.abs(np.asarray(quant.dequantize(double)) - np.asarray(w))
  allowed = half_gap * per_weight(absmax) + per_weight(np.abs(approx - absmax))
  assert (error <= allowed * (1 + 1e-5) + 1e-6).all()


FORWARD = jax.jit(llama.forward, static_argnames=('config', 'lora_config'))


def _random_like(make, seed: int, std: float):
  """make()'s tree of arrays, drawn N(0, std) by numpy (no per-shape random kernels to
  compile); norm weights 1 + N(0, std)."""
  rng = np.random.default_rng(seed)
  draw = lambda path, x: (
      float('norm' in jax.tree_util.keystr(path)) + std * rng.standard_normal(x.shape)
  ).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(make))


@functools.cache
def _setup(kind='nf4'):
  params = _random_like(lambda: llama.init_params(MODEL, jax.random.key(0)), 0, 0.02)
  quantized = quant.quantize_params(params, kind)
  lora_config = LoraConfig(rank=4, alpha=8.0, targets=('q', 'v', 'o', 'down'))
  lora = _random_like(lambda: init_lora(jax.random.key(1), MODEL, lora_config), 1, 0.05)
  tokens = np.random.default_rng(3).integers(0, MODEL.vocab_size, (2, 24), np.int32)
  return params, quantized, quant.dequantize_params(quantized), lora, lora_config, tokens


@pytest.mark.parametrize('kind', ['nf4', pytest.param('int8', marks=pytest.mark.slow)])
def test_quantized_forward_equals_the_dequantized_weights_forward(kind):
  _, quantized, dense, lora, lora_config, tokens = _setup(kind)
  assert all(quant.is_quantized(quantized['layers'][p]) for p in TARGETS)
  forward = lambda p, **kw: FORWARD(p, tokens, MODEL, **kw)[0]
  np.testing.assert_allclose(forward(quantized), forward(dense), atol=1e-5, rtol=0)
  with_lora = dict(lora=lora, lora_config=lora_config)
  np.testing.assert_allclose(
      forward(quantized, **with_lora), forward(dense, **with_lora), atol=1e-5, rtol=0
  )
  # LoRA with B = 0 on the quantized base is the quantized base.
  zero_b = jax.tree.map(
      lambda ab: {**ab, 'b': jnp.zeros_like(ab['b'])}, lora, is_leaf=lambda x: 'b' in x
  )
  np.testing.assert_allclose(
      forward(quantized, lora=zero_b, lora_config=lora_config),
      forward(quantized),
      atol=1e-6,
      rtol=0,
  )
  # Merging into a quantized base gives the dense merged model.
  merged = forward(jax.jit(merge_lora, static_argnums=2)(quantized, lora, lora_config))
  np.testing.assert_allclose(merged, forward(dense, **with_lora), atol=1e-5, rtol=0)


@pytest.mark.slow  # the fast suite checks them through a TTT step (tests/train/test_qlora.py)
def test_adapter_gradients_through_the_quantized_base_equal_the_dense_ones():
  """Both custom VJPs (lora_ops for adapted projections, quant.matmul for the others)
  give the dense model's adapter gradients."""
  _, quantized, dense, lora, lora_config, tokens = _setup()

  def loss(lora, base):
    logits = FORWARD(base, tokens, MODEL, lora=lora, lora_config=lora_config)[0]
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0] ** 2)

  got, want = jax.grad(loss)(lora, quantized), jax.grad(loss)(lora, dense)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-4), got, want)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(got)) > 1e-4


def test_model_spec_quantize_loads_a_quantized_base():
  _, params, _ = builtin.load_base_model(builtin.ModelSpec(quantize='nf4', double_quant=True))
  q = params['layers']['gate']
  assert quant.is_quantized(q) and isinstance(q.scales, quant.DoubleQuantScales)
  assert q.shape == (128, 512) and q.codes.shape == (4, 128 * 512 // 2)
  assert not quant.is_quantized(params['embed'])
  with pytest.raises(ValueError, match='quantize'):
    builtin.ModelSpec(quantize='fp4')
