"""Product-of-experts scores equal the summed log-softmax of a direct forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data import format as fmt
from ttt_jax.data.arc import Pair, Task
from ttt_jax.infer import prompts, score
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
    max_position_embeddings=1024,
)
LORA = LoraConfig(rank=4, alpha=8.0)


def _task():
  rng = np.random.default_rng(0)
  grid = lambda: rng.integers(0, 10, rng.integers(2, 5, 2)).astype(np.int8)
  return Task('s0', tuple(Pair(grid(), grid()) for _ in range(2)), (Pair(grid(), grid()),))


_forward = jax.jit(llama.forward, static_argnames=('config', 'lora_config'))


def _direct(params, task, candidate, d8, colors, lora=None):
  """Sum of log-softmax over the candidate's tokens, from one unbatched, unpadded forward."""
  tokens, mask = score.scoring_sequences(task, 0, candidate, d8, colors)
  logits, _ = _forward(
      params,
      jnp.asarray(tokens[None]),
      CONFIG,
      lora=lora,
      lora_config=LORA if lora is not None else None,
  )
  logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
  return sum(float(logp[s - 1, tokens[s]]) for s in np.flatnonzero(mask))


@pytest.mark.parametrize('with_lora', [False, True])
def test_scores_equal_summed_log_softmax_of_direct_forward(with_lora):
  params = llama.init_params(CONFIG, jax.random.key(0), std=0.2)
  lora = None
  if with_lora:
    lora = init_lora(jax.random.key(1), CONFIG, LORA)
    lora = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape), lora)
  task = _task()
  rng = np.random.default_rng(1)
  candidates = [task.test[0].output, rng.integers(0, 10, (3, 2)), rng.integers(0, 10, (1, 4))]
  transforms = score.scoring_transforms(task.id, 0, 3)
  got = score.score_candidates(
      params,
      CONFIG,
      task,
      0,
      candidates,
      transforms,
      lora=lora,
      lora_config=LORA if with_lora else None,
      length_multiple=16,
  )
  assert got.shape == (3,)
  for c, cand in enumerate(candidates):
    want = sum(_direct(params, task, cand, d8, colors, lora) for d8, colors in transforms)
    assert got[c] == pytest.approx(want, abs=1e-3)


def test_scoring_sequence_targets_only_the_candidate():
  task = _task()
  cand = np.array([[1, 2], [3, 4]])
  tokens, mask = score.scoring_sequences(task, 0, cand, 4, prompts.IDENTITY_COLORS)
  np.testing.assert_array_equal(tokens[mask == 1], [1, 3, fmt.NEWLINE, 2, 4, fmt.NEWLINE, fmt.EOS])
  assert tokens[np.flatnonzero(mask)[0] - 1] == fmt.OUTPUT


def test_scoring_transforms_start_with_identity_and_are_seeded():
  a = score.scoring_transforms('x', 0, 5)
  assert a[0] == (0, prompts.IDENTITY_COLORS)
  assert [d for d, _ in a] == [0, 1, 2, 3, 4]
  assert all(c[0] == 0 and sorted(c) == list(range(10)) for _, c in a)
  assert a == score.scoring_transforms('x', 0, 5)
  assert a != score.scoring_transforms('y', 0, 5)
  with pytest.raises(ValueError, match='num'):
    score.scoring_transforms('x', 0, 0)


@pytest.mark.parametrize('group_tokens', [16, 32, 48])  # 1, 2, 3 rows per group of 6
def test_target_logprobs_in_row_groups_equal_one_pass(group_tokens):
  params = llama.init_params(CONFIG, jax.random.key(0), std=0.2)
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 13, (6, 16)).astype(np.int32)
  lengths = np.array([16, 9, 12, 3, 16, 7], np.int32)
  targets = (rng.random((6, 16)) < 0.5).astype(np.int32)
  logp = lambda g: np.asarray(
      score.target_logprobs(params, CONFIG, tokens, lengths, targets, capacity=96, group_tokens=g)
  )
  one_pass = logp(0)
  assert np.all(one_pass < 0)
  np.testing.assert_allclose(logp(group_tokens), one_pass, rtol=1e-5, atol=1e-5)
