"""loss_one with the LM head only at target positions == the full-logits loss, and grads."""

import jax
import numpy as np
import pytest

import ttt_testlib as tl
from ttt_jax.model.lora import init_lora
from ttt_jax.train import loss
from ttt_jax.train.ttt_config import TTTConfig


@pytest.fixture(scope='module')
def setup():
  arrays = tl.task_arrays(1, num_examples=[4], seed=3)
  batch = {
      'tokens': arrays.tokens[0, :2],
      'mask': np.arange(tl.S)[None, :] < arrays.lengths[0, :2, None],
      'loss_mask': arrays.loss_mask[0, :2],
  }
  lora = jax.tree.map(lambda x: x + 0.1, init_lora(jax.random.key(0), tl.MODEL, tl.TTT.lora))
  return tl.base_params(), lora, batch


def _loss_and_grads(setup, capacity):
  params, lora, batch = setup
  fn = lambda lora: loss.loss_one(params, lora, batch, tl.MODEL, tl.TTT.lora, capacity)
  return jax.jit(jax.value_and_grad(fn))(lora)


def test_loss_at_target_positions_equals_full_logits(setup):
  needed = loss.max_targets_per_batch(setup[2]['loss_mask'], 2)
  want, want_grads = _loss_and_grads(setup, None)
  for capacity in (needed, needed + 7):
    got, got_grads = _loss_and_grads(setup, capacity)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)


def test_too_small_capacity_gives_nan_not_a_truncated_loss(setup):
  needed = int(np.count_nonzero(setup[2]['loss_mask'][:, 1:]))
  loss, _ = _loss_and_grads(setup, needed - 1)
  assert np.isnan(loss)


def test_max_targets_per_batch_takes_the_fullest_rows():
  loss_mask = np.zeros((3, 6), np.int32)
  loss_mask[0, 1:3] = 1  # 2 targets
  loss_mask[1, 0:6] = 1  # 5 targets (position 0 is never a target)
  loss_mask[2, 2:6] = 1  # 4 targets
  assert loss.max_targets_per_batch(loss_mask, 2) == 9
  with pytest.raises(ValueError, match='loss_capacity'):
    TTTConfig(loss_capacity=0)


def test_blocked_cross_entropy_equals_one_block_with_grads():
  """A large vocabulary's logits go in blocks (recomputed in the backward): same numbers."""
  config = tl.MODEL.replace(vocab_size=1000)
  params = tl.base_params(config)
  rng = np.random.default_rng(0)
  h_ND = jax.numpy.asarray(rng.normal(size=(37, config.hidden_size)), jax.numpy.float32)
  targets_N = rng.integers(0, 1000, 37)
  weights_N = (rng.random(37) < 0.7).astype(np.float32)

  def value_and_grads(block_elements):
    fn = lambda p, h: loss.weighted_cross_entropy(
        p, h, targets_N, weights_N, config, block_elements=block_elements
    )
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(params, h_ND)

  want, want_grads = value_and_grads(10**9)
  for block in (1000, 5 * 1000, 8 * 1000):  # 1, 5 and 8 rows a block: 37, 8 and 5 blocks
    got, got_grads = value_and_grads(block)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5)
