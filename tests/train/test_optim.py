"""The per-task optimizer: schedule, per-task clipping, injected hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ttt_jax.train import optim


def test_warmup_cosine_shape():
  total, frac = 20, 0.1  # 2 warmup steps
  mult = np.asarray(optim.warmup_cosine(jnp.arange(total), total, frac))
  np.testing.assert_allclose(mult[:2], [0.5, 1.0])
  cosine = 0.5 * (1 + np.cos(np.pi * (np.arange(2, total) - 2) / (total - 2)))
  np.testing.assert_allclose(mult[2:], cosine, rtol=1e-6, atol=1e-7)
  assert np.all(np.diff(mult[1:]) <= 0) and mult[-1] > 0
  # Per-task totals as an array; no warmup starts at the peak.
  per_task = np.asarray(optim.warmup_cosine(jnp.array([0, 0, 5]), jnp.array([4, 10, 10]), 0.0))
  np.testing.assert_allclose(per_task, [1.0, 1.0, 0.5], rtol=1e-6)


def test_clipping_is_per_task():
  tx = optim.make_optimizer(clip_norm=1.0, weight_decay=0.0)
  params = {'w': jnp.zeros((2, 3))}  # two tasks
  state = optim.init_task_states(tx, params)
  state = optim.with_hyperparams(state, learning_rate=jnp.full((2,), 0.1))
  small, huge = np.full(3, 0.01, np.float32), np.full(3, 1e6, np.float32)
  grads_pair = {'w': jnp.stack([small, huge])}
  updates, _ = jax.vmap(tx.update)(grads_pair, state, params)
  alone, _ = jax.vmap(tx.update)({'w': jnp.stack([small, small])}, state, params)
  # Task 0's update does not see task 1's huge gradient.
  np.testing.assert_array_equal(np.asarray(updates['w'][0]), np.asarray(alone['w'][0]))
  # Each task's clipped gradient: Adam's first step is -lr * sign(g) either way,
  # so compare the clip itself.
  clip = optax.clip_by_global_norm(1.0)
  clipped, _ = jax.vmap(lambda g: clip.update(g, clip.init(g)))(grads_pair)
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(clipped['w']), axis=1), [np.linalg.norm(small), 1.0], rtol=1e-6
  )


def test_injected_hyperparams_are_per_task_and_validated():
  tx = optim.make_optimizer(weight_decay=0.01)
  params = {'w': jnp.ones((3, 2))}
  state = optim.init_task_states(tx, params)
  assert state.hyperparams['weight_decay'].shape == (3,)
  state = optim.with_hyperparams(state, learning_rate=jnp.array([0.0, 0.1, 0.2]))
  updates, _ = jax.vmap(tx.update)({'w': jnp.ones((3, 2))}, state, params)
  u = np.asarray(updates['w'])
  assert np.all(u[0] == 0) and np.all(u[2] < u[1]) and np.all(u[1] < 0)
  with pytest.raises(KeyError, match='learning_rat'):
    optim.with_hyperparams(state, learning_rat=1.0)
