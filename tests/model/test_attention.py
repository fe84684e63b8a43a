"""Block-causal attention with its custom VJP == the full masked softmax, values and grads,
and the model's two attention paths agree (without and with the KV cache)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import attention, kv_cache, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

TOL = 1e-5  # one attention call
MODEL_TOL = 1e-4  # logits through layers of float32 rounding (as the HF parity tests)


def _mask(kind: str, batch: int, seq_len: int) -> np.ndarray:
  lengths = np.linspace(seq_len, seq_len // 3, batch).astype(int)
  valid = np.arange(seq_len)[None, :] < lengths[:, None]
  return {'causal': np.ones((batch, seq_len), bool), 'right': valid, 'left': valid[:, ::-1]}[kind]


def _qkv(batch, seq_len, heads, kv_heads, head_dim, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, seq_len, heads, head_dim))
  k, v = (rng.normal(size=(batch, seq_len, kv_heads, head_dim)) for _ in range(2))
  return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _xla(q, k, v, key_valid):
  B, S = key_valid.shape
  return attention.xla_attention(q, k, v, jnp.broadcast_to(jnp.arange(S), (B, S)), key_valid)


@functools.partial(jax.jit, static_argnames=('impl', 'block_size'))
def _value_and_grads(q, k, v, key_valid, cotangent, impl, block_size):
  if impl == 'xla':
    fn = lambda q, k, v: _xla(q, k, v, key_valid)
  else:
    fn = lambda q, k, v: attention.blockwise_attention(q, k, v, key_valid, block_size)
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(cotangent)


@pytest.mark.parametrize('mask_kind', ['causal', 'right', 'left'])
@pytest.mark.parametrize('heads,kv_heads', [(4, 2), (2, 2)])
@pytest.mark.parametrize('seq_len,block_size', [(70, 16), (48, 16), (9, 16)])
def test_blockwise_matches_xla(mask_kind, heads, kv_heads, seq_len, block_size):
  q, k, v = _qkv(3, seq_len, heads, kv_heads, 8)
  key_valid = jnp.asarray(_mask(mask_kind, 3, seq_len))
  cotangent = jax.random.normal(jax.random.key(1), q.shape)
  want, want_grads = _value_and_grads(q, k, v, key_valid, cotangent, 'xla', block_size)
  got, got_grads = _value_and_grads(q, k, v, key_valid, cotangent, 'blockwise', block_size)
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  for name, g, w in zip('qkv', got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=TOL, rtol=0, err_msg=f'd{name}')
  assert np.abs(np.asarray(got_grads[1])).max() > 0  # gradients are not trivially zero


def test_query_that_sees_no_key_outputs_zeros():
  q, k, v = _qkv(1, 20, 2, 1, 8)
  key_valid = jnp.asarray(np.arange(20)[None] >= 6)  # left padding: queries 0..5 see nothing
  for impl in ('xla', 'blockwise'):
    out, grads = _value_and_grads(q, k, v, key_valid, jnp.ones_like(q), impl, 8)
    np.testing.assert_array_equal(np.asarray(out)[0, :6], 0.0)
    assert all(np.all(np.isfinite(g)) for g in grads), impl
    np.testing.assert_array_equal(np.asarray(grads[0])[0, :6], 0.0)


def test_blockwise_keeps_bfloat16():
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(2, 40, 4, 2, 8))
  key_valid = jnp.asarray(_mask('right', 2, 40))
  out = attention.blockwise_attention(q, k, v, key_valid, 16)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(
      np.asarray(out, np.float32), np.asarray(_xla(q, k, v, key_valid), np.float32), atol=3e-2
  )


# --- in the model ------------------------------------------------------------------------

CONFIG = ModelConfig.preset('tiny', num_layers=2, hidden_size=64, intermediate_size=96)
LORA = LoraConfig(rank=4, targets=('q', 'k', 'v', 'o', 'gate', 'up', 'down'))
SEQ = 150  # more than one 128-query block, not a multiple of it


@pytest.fixture(scope='module')
def model():
  params = jax.jit(llama.init_params, static_argnames=('config', 'std'))(
      CONFIG, jax.random.key(0), std=0.2
  )
  # A non-zero b, so the adapter changes the output.
  lora = jax.tree.map(lambda x: x + 0.05, init_lora(jax.random.key(1), CONFIG, LORA))
  return params, lora


@functools.partial(jax.jit, static_argnames='config')
def _loss_and_lora_grads(params, lora, tokens, mask, config):
  def loss(lora):
    logits, _ = llama.forward(params, tokens, config, mask_BS=mask, lora=lora, lora_config=LORA)
    return jnp.sum(jnp.where(mask[..., None], logits, 0.0) ** 2) / 1e3, logits

  return jax.value_and_grad(loss, has_aux=True)(lora)


def test_model_attention_impls_agree(model):
  params, lora = model
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, CONFIG.vocab_size, (2, SEQ)), jnp.int32)
  mask = jnp.asarray(np.stack([_mask('left', 2, SEQ)[1], _mask('right', 2, SEQ)[1]]))
  (_, want), want_grads = _loss_and_lora_grads(
      params, lora, tokens, mask, CONFIG.replace(attention_impl='xla')
  )
  (_, got), got_grads = _loss_and_lora_grads(
      params, lora, tokens, mask, CONFIG.replace(attention_impl='blockwise')
  )
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=MODEL_TOL, rtol=0)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, atol=MODEL_TOL, rtol=0)


@pytest.mark.parametrize('seq_len,block_size', [(40, 8), (37, 8), (5, 8)])
def test_cached_attention_matches_xla(seq_len, block_size):
  """Decode-step attention over a [B, K, T, D] cache in key blocks == the full masked softmax,
  with rows at different ends, several queries per row and T not a multiple of the block."""
  q, k, v = _qkv(3, seq_len, 4, 2, 8, seed=3)
  end_B = jnp.asarray([min(5, seq_len), min(13, seq_len), seq_len], jnp.int32)
  S = 2  # the last 2 filled slots of each row are this chunk's queries
  query_slot_BS = end_B[:, None] - S + jnp.arange(S)[None, :]
  q_BSHD = jnp.take_along_axis(q, query_slot_BS[:, :, None, None], axis=1)
  key_valid_BT = jnp.arange(seq_len)[None, :] < end_B[:, None]
  want = attention.xla_attention(q_BSHD, k, v, query_slot_BS, key_valid_BT)
  # [B, T, K, D] -> layer 1 of a 2-layer cache [L, B, K, T, D]
  to_cache = lambda x: jnp.stack([jnp.zeros_like(x), x]).swapaxes(2, 3)
  got = attention.cached_attention(
      q_BSHD, to_cache(k), to_cache(v), 1, query_slot_BS, end_B, block_size
  )
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_cached_attention_under_vmap_over_rows_equals_the_batch():
  """Rows vmapped one by one (the per-row-adapter decode path): each row's own number of
  key blocks (a batched loop bound) gives what the whole batch gives."""
  q, k, v = _qkv(3, 40, 4, 2, 8, seed=5)
  end_B = jnp.asarray([3, 20, 37], jnp.int32)
  query_slot_BS = (end_B - 1)[:, None]
  q_BSHD = jnp.take_along_axis(q, query_slot_BS[:, :, None, None], axis=1)
  k_LBKTD, v_LBKTD = (jnp.swapaxes(x, 1, 2)[None] for x in (k, v))
  batch = attention.cached_attention(q_BSHD, k_LBKTD, v_LBKTD, 0, query_slot_BS, end_B, 8)
  one_row = lambda q, k, v, slot, end: attention.cached_attention(
      q[None], k[:, None], v[:, None], 0, slot[None], end[None], 8
  )[0]
  rows = jax.vmap(one_row, in_axes=(0, 1, 1, 0, 0))(q_BSHD, k_LBKTD, v_LBKTD, query_slot_BS, end_B)
  np.testing.assert_allclose(rows, batch, atol=1e-6, rtol=0)


def test_cached_attention_reads_only_blocks_below_the_longest_row():
  """Blocks past every row's end are never read: NaN there leaves the output as it was."""
  q, k, v = _qkv(2, 40, 4, 2, 8, seed=4)
  end_B = jnp.asarray([5, 13], jnp.int32)  # blocks of 8: slots 0-15 are visited
  query_slot_BS = (end_B - 1)[:, None]
  q_BSHD = jnp.take_along_axis(q, query_slot_BS[:, :, None, None], axis=1)
  k_LBKTD, v_LBKTD = (jnp.swapaxes(x, 1, 2)[None] for x in (k, v))
  want = attention.cached_attention(q_BSHD, k_LBKTD, v_LBKTD, 0, query_slot_BS, end_B, 8)
  poisoned = lambda x: x.at[..., 16:, :].set(jnp.nan)
  got = attention.cached_attention(
      q_BSHD, poisoned(k_LBKTD), poisoned(v_LBKTD), 0, query_slot_BS, end_B, 8
  )
  np.testing.assert_array_equal(got, want)
  assert np.all(np.isfinite(got))


def test_cached_prefill_matches_blockwise_forward(model):
  """Prefill into an empty cache reads each row's last real logits of the full forward."""
  params, lora = model
  config = CONFIG.replace(attention_impl='blockwise')
  lengths = jnp.asarray([SEQ, 97], jnp.int32)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, config.vocab_size, (2, SEQ)), jnp.int32)
  mask = jnp.arange(SEQ)[None, :] < lengths[:, None]
  full, _ = jax.jit(llama.forward, static_argnames=('config', 'lora_config'))(
      params, tokens, config, mask_BS=mask, lora=lora, lora_config=LORA
  )
  cache = kv_cache.init_cache(config, 2, SEQ + 4)
  last, _ = jax.jit(kv_cache.prefill, static_argnames=('config', 'lora_config'))(
      params, config, tokens, lengths, cache, lora=lora, lora_config=LORA
  )
  want = np.asarray(full)[np.arange(2), np.asarray(lengths) - 1]
  np.testing.assert_allclose(last, want, atol=MODEL_TOL, rtol=0)


def test_config_attention_impl():
  assert ModelConfig.preset('tiny').attention_impl == 'auto'
  assert 'attention_impl' not in ModelConfig.preset('tiny').to_hf()
  with pytest.raises(ValueError, match='attention_impl'):
    ModelConfig.preset('tiny', attention_impl='flash')
