"""The attention switch: every kernel CPU can run agrees on values and gradients (padding on
either side, GQA), `resolve` picks what its docstring table says, bad values are clear
errors, and the cuDNN path traces under vmap + grad (its kernel needs a GPU)."""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import attention, attention_dispatch, llama
from ttt_jax.model.builtin import ModelSpec
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

TOL = 1e-5
MODEL_TOL = 1e-4  # logits through layers of float32 rounding (as test_attention.py)


def _valid(kind: str, batch: int, seq_len: int) -> np.ndarray:
  lengths = np.linspace(seq_len, seq_len // 3, batch).astype(int)
  right = np.arange(seq_len)[None, :] < lengths[:, None]
  return {
      'full': np.ones((batch, seq_len), bool),
      'right': right,
      'left': right[:, ::-1],
      # a span in the middle, and a row that is all padding
      'middle_and_empty': np.stack([np.roll(right[-1], 3), np.zeros(seq_len, bool)]),
  }[kind]


def _rows(kind: str, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(key_valid, segment ids or None): 'packed' rows hold several examples, then padding."""
  if kind != 'packed':
    return _valid(kind, batch, seq_len), None
  ends = [[10, 25, seq_len - 4], [20, seq_len]][:batch]
  segments = np.stack([np.searchsorted(e, np.arange(seq_len), side='right') + 1 for e in ends])
  segments[0, ends[0][-1] :] = 0
  return segments > 0, segments.astype(np.int32)


KERNELS = {
    'ours_xla': lambda q, k, v, valid, seg: attention.xla_attention(
        q, k, v, jnp.broadcast_to(jnp.arange(q.shape[1]), valid.shape), valid, seg
    ),
    'blockwise': lambda q, k, v, valid, seg: attention.blockwise_attention(
        q, k, v, valid, 16, segments_BS=seg
    ),
    'jax_xla': lambda q, k, v, valid, seg: attention_dispatch.dot_product_attention(
        q, k, v, valid, 'xla', seg
    ),
}


@functools.partial(jax.jit, static_argnames='kernel')
def _value_and_grads(q, k, v, valid, segments, cotangent, kernel):
  out, vjp = jax.vjp(lambda q, k, v: KERNELS[kernel](q, k, v, valid, segments), q, k, v)
  return out, vjp(cotangent)


@pytest.mark.parametrize('kind', ['full', 'right', 'left', 'middle_and_empty', 'packed'])
@pytest.mark.parametrize('heads,kv_heads', [(4, 2), (4, 1), (2, 2)])
def test_kernels_agree_on_values_and_grads(kind, heads, kv_heads):
  rng = np.random.default_rng(0)
  B, S, D = 2, 37, 8
  q = jnp.asarray(rng.normal(size=(B, S, heads, D)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, S, kv_heads, D)), jnp.float32) for _ in 'kv')
  valid, segments = _rows(kind, B, S)
  valid = jnp.asarray(valid)
  segments = None if segments is None else jnp.asarray(segments)
  cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  want, want_grads = _value_and_grads(q, k, v, valid, segments, cotangent, 'ours_xla')
  for kernel in ('blockwise', 'jax_xla'):
    got, got_grads = _value_and_grads(q, k, v, valid, segments, cotangent, kernel)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=kernel)
    for name, g, w in zip('qkv', got_grads, want_grads):
      assert np.all(np.isfinite(g)), (kernel, name)
      np.testing.assert_allclose(g, w, atol=TOL, rtol=0, err_msg=f'{kernel} d{name}')
  # A query before its row's first real key outputs zeros (the convention of attention.py).
  sees_none = np.cumsum(np.asarray(valid), axis=1) == 0
  assert np.all(np.asarray(got)[sees_none] == 0)
  assert np.abs(np.asarray(want_grads[1])).max() > 0


CONFIG = ModelConfig.preset('tiny', num_layers=2, hidden_size=64, intermediate_size=96)
LORA = LoraConfig(rank=4, targets=('q', 'k', 'v', 'o', 'gate', 'up', 'down'))


@functools.partial(jax.jit, static_argnames='config')
def _logits_and_lora_grads(params, lora, tokens, mask, config):
  def loss(lora):
    logits, _ = llama.forward(params, tokens, config, mask_BS=mask, lora=lora, lora_config=LORA)
    return jnp.sum(jnp.where(mask[..., None], logits, 0.0) ** 2) / 1e3, logits

  return jax.value_and_grad(loss, has_aux=True)(lora)


def test_model_kernels_agree_on_logits_and_lora_grads():
  params = llama.init_params(CONFIG, jax.random.key(0), std=0.2)
  lora = jax.tree.map(lambda x: x + 0.05, init_lora(jax.random.key(1), CONFIG, LORA))
  S = 140  # more than one 128-query block
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, S)), jnp.int32)
  mask = jnp.asarray(np.stack([_valid('left', 2, S)[1], _valid('right', 2, S)[1]]))
  results = {
      impl: _logits_and_lora_grads(params, lora, tokens, mask, CONFIG.replace(attention_impl=impl))
      for impl in ('auto', 'blockwise', 'xla')
  }
  (_, want), want_grads = results['blockwise']
  real = np.asarray(mask)
  for impl in ('auto', 'xla'):
    (_, got), got_grads = results[impl]
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=MODEL_TOL)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, atol=MODEL_TOL, rtol=0, err_msg=impl)


@pytest.mark.parametrize(
    'impl,backend,dtype,head_dim,want',
    [
        ('auto', 'cpu', 'float32', 64, 'blockwise'),
        ('auto', 'cpu', 'bfloat16', 64, 'blockwise'),
        ('auto', 'gpu', 'bfloat16', 64, 'cudnn'),
        ('auto', 'gpu', 'float16', 128, 'cudnn'),
        ('auto', 'gpu', 'float32', 64, 'xla'),  # cuDNN's flash attention is bf16 / fp16 only
        ('auto', 'gpu', 'bfloat16', 256, 'xla'),  # head_dim over 128
        ('auto', 'gpu', 'bfloat16', 36, 'xla'),  # head_dim not a multiple of 8
        ('auto', 'tpu', 'bfloat16', 128, 'splash'),
        ('auto', 'tpu', 'float32', 64, 'splash'),
        ('xla', 'cpu', 'float32', 64, 'xla'),
        ('blockwise', 'gpu', 'bfloat16', 64, 'blockwise'),
        ('cudnn', 'gpu', 'bfloat16', 64, 'cudnn'),
        ('splash', 'tpu', 'bfloat16', 64, 'splash'),
        ('splash', 'cpu', 'float32', 64, 'splash'),  # interpreted (the tests)
        ('pallas_gpu', 'gpu', 'bfloat16', 64, 'pallas_gpu'),
        ('pallas_gpu', 'cpu', 'float32', 64, 'pallas_gpu'),
    ],
)
def test_resolve(impl, backend, dtype, head_dim, want):
  assert attention_dispatch.resolve(impl, backend, dtype, head_dim) == want


def test_resolve_packed_rows():
  # cuDNN takes lengths, not segment ids: packed rows run Pallas (Triton) on a GPU.
  assert attention_dispatch.resolve('auto', 'gpu', 'bfloat16', 64, segmented=True) == 'pallas_gpu'
  assert attention_dispatch.resolve('auto', 'gpu', 'float32', 128, segmented=True) == 'pallas_gpu'
  assert attention_dispatch.resolve('auto', 'gpu', 'bfloat16', 512, segmented=True) == 'xla'
  assert attention_dispatch.resolve('auto', 'tpu', 'bfloat16', 64, segmented=True) == 'splash'
  assert attention_dispatch.resolve('auto', 'cpu', 'bfloat16', 64, segmented=True) == 'blockwise'
  with pytest.raises(ValueError, match="attention='cudnn' takes no segment ids"):
    attention_dispatch.resolve('cudnn', 'gpu', 'bfloat16', 64, segmented=True)


def test_choose_says_why():
  choice = attention_dispatch.choose('auto', 'gpu', 'bfloat16', 64, segmented=True)
  assert choice.kernel == 'pallas_gpu' and 'segment ids' in choice.why
  choice = attention_dispatch.choose('auto', 'gpu', 'float32', 64)
  assert choice.kernel == 'xla' and 'needs compute_dtype' in choice.why
  assert 'interpret' in attention_dispatch.choose('splash', 'cpu', 'float32', 64).why


def test_a_jax_without_the_pallas_kernels_falls_back_to_xla():
  """A jax that moved the kernels (jax 0.11 deprecates the GPU one): 'auto' takes XLA's
  softmax and names the reason; naming the kernel is a clear error."""
  missing = lambda kernel: f'is not in jax {jax.__version__}: no module'
  with mock.patch.object(attention_dispatch, '_import_problem', missing):
    for backend in ('gpu', 'tpu'):
      choice = attention_dispatch.choose('auto', backend, 'bfloat16', 64, segmented=True)
      assert choice.kernel == 'xla' and 'is not in jax' in choice.why
    with pytest.raises(ValueError, match="attention='splash' is not in jax"):
      attention_dispatch.resolve('splash', 'tpu', 'bfloat16', 64)
  assert attention_dispatch.pallas_problem('splash', 64) is None  # this jax has both
  assert attention_dispatch.pallas_problem('pallas_gpu', 64) is None


def test_bad_values_are_clear_errors():
  with pytest.raises(ValueError, match="attention='cudnn' needs an NVIDIA GPU"):
    attention_dispatch.resolve('cudnn', 'cpu', 'bfloat16', 64)
  with pytest.raises(ValueError, match="attention='cudnn' needs compute_dtype"):
    attention_dispatch.resolve('cudnn', 'gpu', 'float32', 64)
  with pytest.raises(ValueError, match="attention='splash' needs a TPU"):
    attention_dispatch.resolve('splash', 'gpu', 'bfloat16', 64)
  with pytest.raises(ValueError, match="attention='pallas_gpu' needs a GPU"):
    attention_dispatch.resolve('pallas_gpu', 'tpu', 'bfloat16', 64)
  with pytest.raises(ValueError, match="attention='pallas_gpu' needs head_dim <= 256"):
    attention_dispatch.resolve('pallas_gpu', 'gpu', 'bfloat16', 512)
  with pytest.raises(ValueError, match='attention must be one of'):
    attention_dispatch.resolve('flash', 'gpu', 'bfloat16', 64)
  with pytest.raises(ValueError, match='ModelConfig.attention_impl must be one of'):
    ModelConfig.preset('tiny', attention_impl='flash')
  with pytest.raises(ValueError, match='ModelSpec.attention must be one of'):
    ModelSpec(attention='flash')


def test_one_default_and_not_in_config_json():
  assert ModelConfig.preset('tiny').attention_impl == ModelSpec().attention == 'auto'
  assert 'attention_impl' not in ModelConfig.preset('tiny').to_hf()


def test_cudnn_path_traces_under_vmap_and_grad():
  """A vmapped loss's gradient through the cuDNN kernel traces (jax's batching rules for it
  hold), as stage 1, scoring and an unpacked vmapped step call it; the device checks are
  patched: the kernel itself runs only on a GPU."""
  fused = pytest.importorskip('jax._src.cudnn.fused_attention_stablehlo')
  config = CONFIG.replace(
      param_dtype='bfloat16', compute_dtype='bfloat16', remat='full', attention_impl='cudnn'
  )
  params = llama.init_params(config, jax.random.key(0))
  lora = init_lora(jax.random.key(1), config, LORA, num_tasks=3)
  tokens = jnp.zeros((3, 2, 64), jnp.int32)
  mask = jnp.arange(64)[None, None, :] < jnp.asarray([[64, 40], [50, 64], [9, 30]])[..., None]

  def loss(lora, tokens, mask):
    logits, _ = llama.forward(params, tokens, config, mask_BS=mask, lora=lora, lora_config=LORA)
    return jnp.mean(logits)

  with (
      mock.patch.object(fused, 'check_cudnn_version', return_value=91000),
      mock.patch.object(fused, 'check_compute_capability', return_value=True),
      mock.patch.object(attention_dispatch.jax, 'default_backend', return_value='gpu'),
  ):
    text = str(jax.make_jaxpr(jax.vmap(jax.grad(loss)))(lora, tokens, mask))
  assert 'dot_product_attention_fwd' in text and 'dot_product_attention_bwd' in text
