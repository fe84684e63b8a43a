"""Batched decoding: cached greedy vs the full forward, per-row adapters, DFS exactness."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data import format as fmt
from ttt_jax.formats.compact import CompactFormat
from ttt_jax.infer import decode
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

CONFIG = ModelConfig(
    vocab_size=16,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rms_norm_eps=1e-5,
    rope_theta=10_000.0,
    max_position_embeddings=512,
)
LORA = LoraConfig(rank=4, alpha=8.0, targets=('q', 'v', 'o', 'gate', 'up', 'down'))


_forward = jax.jit(llama.forward, static_argnames=('config', 'lora_config'))


def _logits(params, config, seqs, task_lora=None, length=32):
  """Full-forward logits [N, length, V] of sequences right-padded to one length (causal: the
  padding changes no earlier logit), one compile for all."""
  tokens = np.zeros((len(seqs), length), np.int32)
  for i, seq in enumerate(seqs):
    tokens[i, : len(seq)] = seq
  logits, _ = _forward(
      params,
      jnp.asarray(tokens),
      config,
      lora=task_lora,
      lora_config=LORA if task_lora is not None else None,
  )
  return np.asarray(logits)


def _params(config=CONFIG, seed=0, std=0.3):
  return llama.init_params(config, jax.random.key(seed), std=std)


def _adapters(num_tasks, seed=1):
  """Stacked adapters with random (non-zero) B, so each task's model differs."""
  lora = init_lora(jax.random.key(seed), CONFIG, LORA, num_tasks=num_tasks)
  keys = iter(jax.random.split(jax.random.key(seed + 1), 2 * len(lora)))
  return {
      n: {'a': ab['a'], 'b': 0.5 * jax.random.normal(next(keys), ab['b'].shape)}
      for n, ab in lora.items()
  }


def _prompts(batch, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 12, batch)
  return decode.pad_prompts(
      [rng.integers(0, 13, n).astype(np.int32) for n in lengths], length_multiple=16
  )


def _task_lora(lora, t):
  return jax.tree.map(lambda x: x[t], lora)


def test_cached_greedy_matches_full_forward_argmax_with_per_row_adapters():
  params, lora = _params(), _adapters(num_tasks=3)
  tokens, lengths = _prompts(5)
  task_index = np.array([2, 0, 1, 2, 0], np.int32)
  out = decode.generate(
      params,
      CONFIG,
      tokens,
      lengths,
      max_new_tokens=8,
      adapters=decode.Adapters(lora, jnp.asarray(task_index), LORA),
  )
  new, new_lengths = np.asarray(out.tokens_BN), np.asarray(out.lengths_B)
  assert (new_lengths > 0).all()
  for b in range(5):
    task_lora = _task_lora(lora, task_index[b])
    n = new_lengths[b]
    seq = np.concatenate([tokens[b, : lengths[b]], new[b, :n]])
    logits = _logits(params, CONFIG, [seq], task_lora)
    steps = np.arange(lengths[b] - 1, lengths[b] - 1 + n)
    np.testing.assert_array_equal(np.argmax(logits[0, steps], -1), new[b, :n])
    logp = jax.nn.log_softmax(logits[0, steps])[np.arange(n), new[b, :n]].sum()
    np.testing.assert_allclose(out.logprob_B[b], logp, rtol=1e-4, atol=1e-4)
    assert (new[b, n:] == fmt.PAD).all()
    # The same row alone, with its task's adapter shared by the whole (1-row) batch.
    alone = decode.generate(
        params,
        CONFIG,
        jnp.asarray(tokens[b : b + 1]),
        jnp.asarray(lengths[b : b + 1]),
        max_new_tokens=8,
        adapters=decode.Adapters.shared(task_lora, LORA),
    )
    alone, alone_len = alone.tokens_BN, alone.lengths_B
    np.testing.assert_array_equal(np.asarray(alone)[0], new[b])
    assert int(alone_len[0]) == n


def test_greedy_without_adapters_is_deterministic():
  params = _params()
  tokens, lengths = _prompts(4)
  a = decode.generate(params, CONFIG, tokens, lengths, max_new_tokens=6)
  b = decode.generate(params, CONFIG, tokens, lengths, max_new_tokens=6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sampling_same_rng_same_result_and_different_rng_differs():
  params = _params(std=0.05)  # flat distributions, so draws really vary
  tokens, lengths = _prompts(4)
  run = lambda seed: decode.generate(
      params,
      CONFIG,
      tokens,
      lengths,
      max_new_tokens=10,
      sampler=decode.Sampling(temperature=1.5),
      rng_B=jax.random.split(jax.random.key(seed), 4),
  )
  a, b, c = run(0), run(0), run(1)
  np.testing.assert_array_equal(np.asarray(a.tokens_BN), np.asarray(b.tokens_BN))
  assert not np.array_equal(np.asarray(a.tokens_BN), np.asarray(c.tokens_BN))
  with pytest.raises(ValueError, match='temperature'):
    decode.Sampling(temperature=0.0)


def test_top_p_draws_only_from_the_nucleus_in_proportion():
  probs = np.array([0.5, 0.25, 0.15, 0.06, 0.04])
  n = 20_000
  keys = jax.random.split(jax.random.key(0), n)
  logits = jnp.tile(jnp.log(probs), (n, 1))
  freq = lambda sampler: np.bincount(sampler.get_next_tokens(logits, keys), minlength=5) / n
  # Mass 0.5, 0.75, 0.9: the nucleus of 0.8 is the first three, renormalised.
  np.testing.assert_allclose(freq(decode.Sampling(top_p=0.8)), [*probs[:3] / 0.9, 0, 0], atol=0.015)
  # The temperature comes first: at 2 the masses are 0.35, 0.59, 0.78, 0.90, so 0.8 keeps four.
  hot = freq(decode.Sampling(temperature=2.0, top_p=0.8))
  assert hot[3] > 0.05 and hot[4] == 0
  assert freq(decode.Sampling(top_p=0.01))[0] == 1  # only the most likely token
  # top_p = 1 is plain sampling, draw for draw.
  np.testing.assert_array_equal(
      decode.Sampling(top_p=1.0).get_next_tokens(logits, keys),
      jax.vmap(jax.random.categorical)(keys, logits),
  )
  for bad in (0.0, 1.5):
    with pytest.raises(ValueError, match='top_p'):
      decode.Sampling(top_p=bad)


# DFS on a model small enough to enumerate: vocab 4 colours + EOS, 3 new tokens at most.
SMALL = CONFIG.replace(vocab_size=5)
SMALL_EOS = 4


def _enumerate(params, prompt, task_lora=None, max_len=3):
  """{completion ending in EOS: log-prob}, by full forwards over every sequence."""
  completions = [
      (*body, SMALL_EOS)
      for n in range(1, max_len + 1)
      for body in itertools.product(range(4), repeat=n - 1)
  ]
  logits = _logits(params, SMALL, [np.concatenate([prompt, c]) for c in completions], task_lora)
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  start = len(prompt) - 1
  return {
      c: float(sum(logp[i, start + j, t] for j, t in enumerate(c)))
      for i, c in enumerate(completions)
  }


@pytest.mark.parametrize('threshold', [0.01, 0.03])
def test_dfs_returns_exactly_the_completions_above_threshold(threshold):
  params = _params(SMALL, seed=3, std=0.15)
  prompts = [np.array([0, 1, 2, 3], np.int32), np.array([3, 3, 1], np.int32)]
  tokens, lengths = decode.pad_prompts(prompts, length_multiple=8, pad_id=0)
  out = decode.dfs(
      params, SMALL, tokens, lengths, threshold=threshold, max_new_tokens=3, stop_ids=(SMALL_EOS,)
  )
  assert out.tokens_BKN.shape == (2, decode.dfs_capacity(threshold), 3)
  for b, prompt in enumerate(prompts):
    expected = {c: lp for c, lp in _enumerate(params, prompt).items() if lp >= math.log(threshold)}
    assert len(expected) >= 2, 'the test model should have completions above the threshold'
    found = {}
    for k in np.flatnonzero(np.asarray(out.found_BK[b])):
      row = np.asarray(out.tokens_BKN[b, k])
      found[tuple(int(t) for t in row[: list(row).index(SMALL_EOS) + 1])] = float(
          out.logprob_BK[b, k]
      )
    assert set(found) == set(expected)
    for c in expected:
      assert found[c] == pytest.approx(expected[c], abs=1e-4)
    # Best first.
    logps = np.asarray(out.logprob_BK[b])[np.asarray(out.found_BK[b])]
    assert (np.diff(logps) <= 0).all()


def test_dfs_with_per_row_adapters_and_determinism():
  params = _params(SMALL, seed=3, std=0.15)
  lora = init_lora(jax.random.key(5), SMALL, LORA, num_tasks=2)
  lora = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(9), x.shape), lora)
  prompts = [np.array([0, 1, 2, 3], np.int32), np.array([0, 1, 2, 3], np.int32)]
  tokens, lengths = decode.pad_prompts(prompts, length_multiple=8, pad_id=0)
  adapters = decode.Adapters(lora, jnp.array([1, 0], jnp.int32), LORA)
  run = lambda: decode.dfs(
      params,
      SMALL,
      tokens,
      lengths,
      threshold=0.05,
      adapters=adapters,
      max_new_tokens=3,
      stop_ids=(SMALL_EOS,),
  )
  a, b = run(), run()
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for row, t in ((0, 1), (1, 0)):
    expected = {
        c
        for c, lp in _enumerate(params, prompts[row], _task_lora(lora, t)).items()
        if lp >= math.log(0.05)
    }
    got = set()
    for k in np.flatnonzero(np.asarray(a.found_BK[row])):
      seq = [int(x) for x in np.asarray(a.tokens_BKN[row, k])]
      got.add(tuple(seq[: seq.index(SMALL_EOS) + 1]))
    assert got == expected


def test_dfs_capacity_and_bad_threshold():
  assert decode.dfs_capacity(0.1) == 10
  assert decode.dfs_capacity(0.3) == 3
  with pytest.raises(ValueError, match='threshold'):
    decode.dfs_capacity(0.0)


def test_malformed_tokens_give_none_not_an_error():
  parse = CompactFormat().parse_answer
  assert parse(np.array([fmt.OUTPUT, 1, fmt.EOS])) is None
  assert parse(np.array([1, 2, fmt.NEWLINE, 3, fmt.NEWLINE, fmt.EOS])) is None
  np.testing.assert_array_equal(parse(np.array([1, 2, fmt.NEWLINE, fmt.EOS])), [[1, 2]])
