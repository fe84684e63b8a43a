"""Cached decoding == full forward, token for token, with prompts of different lengths."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data import format as fmt
from ttt_jax.infer import decode
from ttt_jax.model import kv_cache, llama, row_groups
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

NEVER = 10_000  # an eos id no token can take


@pytest.fixture(scope='module')
def model():
  config = ModelConfig.preset('tiny', num_layers=2, vocab_size=24)
  # A wide init so greedy choices are not near-ties.
  params = jax.jit(llama.init_params, static_argnames=('config', 'std'))(
      config, jax.random.key(0), std=0.3
  )
  return config, params


def _prompts(config, lengths, seq_len, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, config.vocab_size, (len(lengths), seq_len)).astype(np.int32)
  for b, n in enumerate(lengths):
    tokens[b, n:] = 0  # right padding
  return tokens, np.asarray(lengths, np.int32)


@functools.partial(jax.jit, static_argnames='config')
def _full_logits(params, tokens_1S, config):
  return llama.forward(params, tokens_1S, config)[0][0]


def _greedy_by_full_forward(params, config, prompt, steps, buffer_len=32):
  """Reference: re-run the whole sequence for every new token (no cache). The sequence sits
  in a fixed-length buffer (causal attention ignores what follows) to compile once."""
  seq, logits_seen = list(prompt), []
  for _ in range(steps):
    buffer = np.zeros((1, buffer_len), np.int32)
    buffer[0, : len(seq)] = seq
    logits = np.asarray(_full_logits(params, jnp.asarray(buffer), config))[len(seq) - 1]
    logits_seen.append(logits)
    seq.append(int(np.argmax(logits)))
  return seq[len(prompt) :], np.stack(logits_seen)


def test_prefill_and_decode_steps_match_full_forward(model):
  config, params = model
  tokens, lengths = _prompts(config, [9, 4, 13], 13)
  steps = 6
  cache = kv_cache.init_cache(config, 3, 13 + steps)
  prefill = jax.jit(kv_cache.prefill, static_argnames='config')
  decode = jax.jit(kv_cache.decode_step, static_argnames='config')

  logits, cache = prefill(params, config, tokens, lengths, cache)
  np.testing.assert_array_equal(cache['end'], lengths)
  cached_tokens, cached_logits = [], []
  for _ in range(steps):
    cached_logits.append(np.asarray(logits))
    next_tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    cached_tokens.append(np.asarray(next_tokens))
    logits, cache = decode(params, config, next_tokens, cache)
  np.testing.assert_array_equal(cache['end'], lengths + steps)
  cached_tokens, cached_logits = np.stack(cached_tokens, 1), np.stack(cached_logits, 1)

  for b, n in enumerate(lengths):
    ref_tokens, ref_logits = _greedy_by_full_forward(params, config, tokens[b, :n].tolist(), steps)
    np.testing.assert_allclose(cached_logits[b], ref_logits, atol=1e-4, rtol=0)
    assert cached_tokens[b].tolist() == ref_tokens


@pytest.mark.parametrize('group_tokens', [13, 26, 39])  # 1, 2, 3 rows per group of 6
def test_prefill_in_row_groups_equals_one_pass(model, group_tokens):
  config, params = model
  tokens, lengths = _prompts(config, [9, 4, 13, 1, 7, 13], 13, seed=3)
  prefill = jax.jit(kv_cache.prefill, static_argnames=('config', 'group_tokens'))
  decode = jax.jit(kv_cache.decode_step, static_argnames='config')
  runs = []
  for tokens_per_group in (0, group_tokens):  # 0: all rows in one pass
    cache = kv_cache.init_cache(config, 6, 13 + 2)
    logits, cache = prefill(params, config, tokens, lengths, cache, group_tokens=tokens_per_group)
    next_logits, cache = decode(params, config, jnp.argmax(logits, -1).astype(jnp.int32), cache)
    runs.append(jax.tree.map(np.asarray, (logits, next_logits, cache)))
  (logits, next_logits, cache), (g_logits, g_next_logits, g_cache) = runs
  # Equal up to float rounding (a group's matmuls have other shapes): logits are ~10 and
  # cached keys ~6 under this wide init.
  np.testing.assert_allclose(g_logits, logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(g_next_logits, next_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(g_cache['end'], lengths + 1)
  np.testing.assert_array_equal(cache['end'], lengths + 1)
  for name in ('k', 'v'):
    np.testing.assert_allclose(g_cache[name], cache[name], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize('group_tokens', [13, 26, 0])  # 1 or 2 rows per group; one pass
def test_prefill_of_shared_prompts_equals_prefilling_every_row(model, group_tokens):
  config, params = model
  tokens, lengths = _prompts(config, [9, 4, 13, 6], 13, seed=4)
  source = np.array([0, 1, 0, 3, 1, 0], np.int32)  # rows 2, 4, 5 repeat rows 0, 1, 0
  tokens, lengths = tokens[source], lengths[source]
  prefill = jax.jit(kv_cache.prefill, static_argnames=('config', 'group_tokens'))
  runs = [
      jax.tree.map(
          np.asarray,
          prefill(
              params,
              config,
              tokens,
              lengths,
              kv_cache.init_cache(config, 6, 15),
              group_tokens=tokens_per_group,
              source_B=source_B,
          ),
      )
      for tokens_per_group, source_B in ((0, None), (group_tokens, source))
  ]
  (logits, cache), (s_logits, s_cache) = runs
  np.testing.assert_allclose(s_logits, logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(s_cache['end'], lengths)
  for name in ('k', 'v'):
    np.testing.assert_allclose(s_cache[name], cache[name], atol=1e-4, rtol=1e-5)


def test_rows_per_group():
  assert row_groups.rows_per_group(16, 800, 2048) == 2
  assert row_groups.rows_per_group(12, 100, 500) == 4  # 5 does not divide 12
  assert row_groups.rows_per_group(7, 100, 300) == 1  # 7 is prime
  assert row_groups.rows_per_group(4, 4096, 2048) == 1  # a row longer than a group
  assert row_groups.rows_per_group(16, 800, 0) == 16
  assert row_groups.rows_per_group(2, 100, 2048) == 2  # fits in one group
  assert jax.default_backend() == 'cpu'  # the default is the CPU's
  assert row_groups.rows_per_group(16, 800) == row_groups.rows_per_group(16, 800, 2048)


def _greedy(params, config, tokens, lengths, max_new, eos_id, lora=None, lora_config=None):
  adapters = None if lora is None else decode.Adapters.shared(lora, lora_config)
  out = decode.generate(
      params, config, tokens, lengths, adapters=adapters, max_new_tokens=max_new, stop_ids=(eos_id,)
  )
  return out.tokens_BN, out.lengths_B


def test_generate_greedy_matches_reference_and_stops_at_eos(model):
  config, params = model
  tokens, lengths = _prompts(config, [5, 11, 8], 11, seed=1)
  new, new_lengths = _greedy(params, config, tokens, lengths, 7, NEVER)
  assert new.shape == (3, 7) and new.dtype == jnp.int32
  np.testing.assert_array_equal(new_lengths, [7, 7, 7])
  for b, n in enumerate(lengths):
    ref_tokens, _ = _greedy_by_full_forward(params, config, tokens[b, :n].tolist(), 7)
    assert new[b].tolist() == ref_tokens

  # Make row 0's third token the EOS: row 0 stops there, the rest is padding.
  eos = int(new[0, 2])
  stopped, stopped_lengths = _greedy(params, config, tokens, lengths, 7, eos)
  for b in range(3):
    row = np.asarray(new[b]).tolist()
    n = row.index(eos) + 1 if eos in row else 7
    assert int(stopped_lengths[b]) == n
    assert np.asarray(stopped[b, :n]).tolist() == row[:n]
    assert np.all(np.asarray(stopped[b, n:]) == fmt.PAD)
  assert int(stopped_lengths[0]) <= 3


def test_generate_with_zero_lora_equals_base(model):
  config, params = model
  tokens, lengths = _prompts(config, [6, 3], 6, seed=2)
  lora_config = LoraConfig(rank=4, targets=('q', 'k', 'v', 'o', 'gate', 'up', 'down'))
  lora = init_lora(jax.random.key(1), config, lora_config)
  base = _greedy(params, config, tokens, lengths, 5, NEVER)
  adapted = _greedy(params, config, tokens, lengths, 5, NEVER, lora, lora_config)
  np.testing.assert_array_equal(adapted[0], base[0])

  # A nonzero adapter changes the continuation and is honoured in the cached path.
  lora = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.key(2), x.shape), lora)
  new, _ = _greedy(params, config, tokens, lengths, 5, NEVER, lora, lora_config)
  prompt = tokens[0, :6][None]
  logits, _ = llama.forward(params, jnp.asarray(prompt), config, lora=lora, lora_config=lora_config)
  assert int(new[0, 0]) == int(jnp.argmax(logits[0, -1]))


def test_cache_write_touches_only_each_rows_slots():
  cache_LBKTD = jnp.zeros((2, 3, 1, 8, 2))
  new_BSKD = jnp.ones((3, 2, 1, 2))
  end_B = jnp.array([0, 3, 6])
  written = llama._write_cache(cache_LBKTD, new_BSKD, jnp.int32(1), end_B)
  expected = np.zeros((2, 3, 1, 8, 2))
  for b, e in enumerate([0, 3, 6]):
    expected[1, b, :, e : e + 2] = 1
  np.testing.assert_array_equal(written, expected)
  # Slots past the end are dropped, not clamped onto valid slots.
  near_end = llama._write_cache(cache_LBKTD, new_BSKD, jnp.int32(0), jnp.array([7, 7, 7]))
  np.testing.assert_array_equal(near_end[0, :, :, 7], 1)
  np.testing.assert_array_equal(near_end[0, :, :, :7], 0)


def test_init_cache_layout():
  config = ModelConfig.preset('tiny')
  cache = kv_cache.init_cache(config, batch=3, max_len=40)
  assert cache['k'].shape == cache['v'].shape == (4, 3, 2, 40, 32)
  assert cache['k'].dtype == jnp.float32 and cache['end'].dtype == jnp.int32
  assert kv_cache.init_cache(config, 1, 8, jnp.bfloat16)['v'].dtype == jnp.bfloat16
