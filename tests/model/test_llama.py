"""The JAX Llama against transformers' LlamaForCausalLM, plus invariances of forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.modeling_rope_utils import _compute_llama3_parameters

from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig, RopeScaling

# original_max_position_embeddings is small so that a 80-token sequence goes past it.
LLAMA3_ROPE = dict(
    rope_type='llama3',
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=32,
)

PARITY_CASES = {
    'gqa_untied': dict(),
    'llama3_rope_tied': dict(rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True, rope_theta=500.0),
    'mha_explicit_head_dim': dict(num_key_value_heads=4, head_dim=24),
    'gqa4_llama3_rope_untied': dict(
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        rope_scaling=dict(LLAMA3_ROPE, factor=4.0, high_freq_factor=2.0),
    ),
}
TOL = 1e-4

forward = jax.jit(llama.forward, static_argnames='config')
init_params = jax.jit(llama.init_params, static_argnames=('config', 'std'))


def _padded_batch(rng, vocab, lengths, seq_len, left):
  tokens = rng.integers(0, vocab, size=(len(lengths), seq_len)).astype(np.int32)
  mask = np.zeros_like(tokens)
  for b, n in enumerate(lengths):
    if left:
      mask[b, seq_len - n :] = 1
    else:
      mask[b, :n] = 1
  return tokens, mask


@pytest.mark.parametrize('case', PARITY_CASES)
def test_logits_match_transformers(case, hf_checkpoint, hf_logits):
  directory, model = hf_checkpoint(**PARITY_CASES[case])
  config, params = hf.load_hf(directory)
  rng = np.random.default_rng(0)

  # Unpadded, longer than original_max_position_embeddings (llama3 rope kicks in).
  tokens = rng.integers(0, config.vocab_size, size=(2, 80)).astype(np.int32)
  ours, _ = forward(params, tokens, config)
  np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=TOL, rtol=0)

  # Right- and left-padded rows of different lengths: compare on the real tokens.
  for left in (False, True):
    tokens, mask = _padded_batch(rng, config.vocab_size, [70, 45, 12], 70, left)
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    ours, _ = forward(params, tokens, config, mask_BS=mask)
    ref = hf_logits(model, tokens, mask, positions)
    assert np.all(np.isfinite(ours)), 'padded rows must not produce NaN'
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], ref[real], atol=TOL, rtol=0)


def test_loaded_config_matches_hf(hf_checkpoint):
  directory, model = hf_checkpoint(**PARITY_CASES['llama3_rope_tied'])
  config, params = hf.load_hf(directory)
  assert config.tie_word_embeddings and 'lm_head' not in params
  assert config.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 32)
  assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (
      2,
      4,
      2,
      16,
  )
  assert params['layers']['q'].shape == (2, 64, 64)
  assert params['layers']['k'].shape == (2, 64, 32)


@pytest.mark.parametrize(
    'rope_scaling', [None, RopeScaling(8.0, 1.0, 4.0, 32), RopeScaling(32.0, 1.0, 4.0, 8192)]
)
def test_rope_inv_freq_matches_transformers(rope_scaling):
  config = ModelConfig.preset('llama3.2-1b', rope_scaling=rope_scaling, rope_theta=500_000.0)
  ours = llama.rope_inv_freq(config)
  if rope_scaling is None:
    ref = 1.0 / (500_000.0 ** (torch.arange(0, 64, 2, dtype=torch.int64).float() / 64))
  else:
    import transformers

    hf_config = transformers.LlamaConfig(**config.to_hf())
    ref, attention_factor = _compute_llama3_parameters(hf_config)
    assert attention_factor == 1.0
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)


@pytest.fixture(scope='module')
def tiny():
  config = ModelConfig.preset('tiny', num_layers=2)
  return config, init_params(config, jax.random.key(0), std=0.1)


def test_init_params_shapes_and_dtypes():
  config = ModelConfig.preset('tiny', param_dtype='bfloat16')
  params = init_params(config, jax.random.key(0))
  L, D, F, V = 4, 128, 512, 16
  want = {
      'embed': (V, D),
      'final_norm': (D,),
      'lm_head': (D, V),
      'layers': {
          'attn_norm': (L, D),
          'q': (L, D, 128),
          'k': (L, D, 64),
          'v': (L, D, 64),
          'o': (L, 128, D),
          'mlp_norm': (L, D),
          'gate': (L, D, F),
          'up': (L, D, F),
          'down': (L, F, D),
      },
  }
  assert jax.tree.map(lambda x: x.shape, params) == want
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params
  tied = init_params(config.replace(tie_word_embeddings=True), jax.random.key(0))
  assert 'lm_head' not in tied


def test_hidden_then_head_equals_forward(tiny):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(1), (2, 20), 0, config.vocab_size)
  logits, cache = forward(params, tokens, config)
  hidden, _ = llama.hidden_states(params, tokens, config)
  assert cache is None and logits.dtype == jnp.float32
  np.testing.assert_array_equal(llama.logits_from_hidden(params, hidden, config), logits)
  # The head alone at a few positions (what a trainer does at loss positions).
  picked = llama.logits_from_hidden(params, hidden[:, [3, 7]], config)
  np.testing.assert_allclose(picked, logits[:, [3, 7]], atol=1e-6)


def test_left_padding_equals_unpadded(tiny):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(2), (1, 12), 0, config.vocab_size)
  alone, _ = forward(params, tokens, config)
  padded = jnp.concatenate([jnp.zeros((1, 5), tokens.dtype), tokens], axis=1)
  mask = jnp.arange(17)[None] >= 5
  logits, _ = forward(params, padded, config, mask_BS=mask)
  np.testing.assert_allclose(logits[:, 5:], alone, atol=1e-5)
  # A fully padded row is finite too.
  logits, _ = forward(params, padded, config, mask_BS=jnp.zeros_like(mask))
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_remat_keeps_values_and_gradients(tiny, remat):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, config.vocab_size)

  def loss(params, config):
    logits, _ = llama.forward(params, tokens, config)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  value, grads = value_and_grad(params, config)
  value_r, grads_r = value_and_grad(params, config.replace(remat=remat))
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads_r, grads)


def test_bfloat16_compute_close_to_float32(tiny):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, config.vocab_size)
  ref, _ = forward(params, tokens, config)
  logits, _ = forward(params, tokens, config.replace(compute_dtype='bfloat16'))
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, ref, atol=0.1)


def test_bad_inputs_raise(tiny):
  config, params = tiny
  with pytest.raises(ValueError, match=r'tokens must be \[B, S\]'):
    llama.forward(params, jnp.zeros((4,), jnp.int32), config)
  with pytest.raises(ValueError, match='mask shape'):
    llama.forward(params, jnp.zeros((2, 4), jnp.int32), config, mask_BS=jnp.ones((2, 5)))
