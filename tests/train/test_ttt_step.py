"""The vmapped multi-task step: equivalence with single-task steps, per-task
control (epochs, lrs, NaN isolation, adaptive stop) and frozen base weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttt_testlib as tl
from ttt_jax.train import loss
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train.ttt_config import TTTConfig
from ttt_jax.train import ttt_step

MODEL, TTT = tl.MODEL, tl.TTT


def fill(arrays, tasks, config=TTT, lrs=None):
  hypers = None if lrs is None else [config.hyper(lr=lr) for lr in lrs]
  return tl.fill_slots(arrays, tasks, config, hypers)


def run(params, slots, data, steps, config=TTT):
  losses = []
  for _ in range(steps):
    slots, metrics = ttt_step.train_step(params, slots, data, model_config=MODEL, ttt_config=config)
    losses.append(np.asarray(metrics['loss']))
  return slots, np.stack(losses, axis=1), metrics


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope='module')
def params():
  return tl.base_params()


@pytest.fixture(scope='module')
def arrays():
  return tl.task_arrays(4, num_examples=[5, 4, 3, 5], seed=0)


@pytest.mark.parametrize('over_slots', ['vmap', 'map'])
def test_vmapped_step_equals_single_task_steps(params, arrays, over_slots):
  config = dataclasses.replace(TTT, over_slots=over_slots)
  slots, losses, _ = run(params, *fill(arrays, range(4), config), steps=3, config=config)
  for t in range(4):
    one, one_losses, _ = run(params, *fill(arrays, [t]), steps=3)
    np.testing.assert_allclose(losses[t], one_losses[0], atol=1e-5, rtol=0)
    for got, want in zip(leaves(slots.lora), leaves(one.lora)):
      np.testing.assert_allclose(got[t], want[0], atol=1e-5, rtol=0)
  # Training moved the adapters (B starts at zero).
  assert np.abs(np.asarray(slots.lora['q']['b'])).max() > 0


def test_over_slots_auto_maps_on_one_cpu_device():
  assert ttt_step.over_slots(TTT, None) == ('map' if jax.default_backend() == 'cpu' else 'vmap')
  assert ttt_step.over_slots(dataclasses.replace(TTT, over_slots='vmap'), None) == 'vmap'
  with pytest.raises(ValueError, match='over_slots'):
    TTTConfig(over_slots='pmap')


def test_each_epoch_visits_every_example_once(arrays):
  config = TTTConfig(lora=LoraConfig(rank=4), batch_size=2)
  data = tl.one_task(arrays, 0)  # 5 examples -> 3 steps an epoch, the last one short
  data = data._replace(tokens=np.arange(tl.N, dtype=np.int32)[:, None] * np.ones(tl.S, np.int32))
  for epoch in range(2):
    seen = []
    for step in range(3 * epoch, 3 * epoch + 3):
      batch = ttt_step.draw_batch(jax.tree.map(jnp.asarray, data), 0, step, config)
      weighted = np.asarray(batch['loss_mask']).sum(axis=1) > 0
      seen += list(np.asarray(batch['tokens'])[weighted, 0])
    assert sorted(seen) == [0, 1, 2, 3, 4]
  orders = [
      np.asarray(ttt_step.draw_batch(jax.tree.map(jnp.asarray, data), 0, s, config)['tokens'])[:, 0]
      for s in (0, 3)
  ]
  assert not np.array_equal(orders[0], orders[1])  # reshuffled per epoch (for this seed)


def test_task_past_its_epochs_is_frozen(params, arrays):
  # Task 2 has 3 examples: 2 steps an epoch, 4 in all; the others need 6.
  slots, data = fill(arrays, range(4))
  assert list(np.asarray(slots.total_steps)) == [6, 4, 4, 6]
  slots, _, metrics = run(params, slots, data, steps=4)
  assert list(np.asarray(metrics['status'])) == [
      ttt_step.Status.RUNNING,
      ttt_step.Status.DONE,
      ttt_step.Status.DONE,
      ttt_step.Status.RUNNING,
  ]
  assert list(np.asarray(metrics['finished'])) == [False, True, True, False]
  frozen = jax.tree.map(np.asarray, (slots.lora, slots.opt_state))
  slots, _, metrics = run(params, slots, data, steps=2)
  for got, want in zip(leaves((slots.lora, slots.opt_state)), jax.tree.leaves(frozen)):
    np.testing.assert_array_equal(got[1:3], want[1:3])
  assert list(np.asarray(slots.step)) == [6, 4, 4, 6]
  assert not np.asarray(metrics['trained'])[1:3].any()


def test_per_task_learning_rates(params, arrays):
  # The same task in 3 slots at lr 0, 1e-3 and 1e-2.
  slots, data = fill(arrays, [0, 0, 0], lrs=[0.0, 1e-3, 1e-2])
  start = jax.tree.map(np.asarray, slots.lora)
  slots, losses, metrics = run(params, slots, data, steps=2)
  np.testing.assert_array_equal(losses[:, 0], losses[0, 0])  # same first batch, same adapter
  delta = [
      max(np.abs(g[i] - s[i]).max() for g, s in zip(leaves(slots.lora), jax.tree.leaves(start)))
      for i in range(3)
  ]
  assert delta[0] == 0.0  # lr 0: no change at all
  assert 0 < delta[1] < delta[2]  # larger lr, larger step
  lr = np.asarray(metrics['lr'])  # the same point of the same schedule, scaled
  assert lr[0] == 0.0 and lr[1] > 0
  np.testing.assert_allclose(lr[2], 10 * lr[1], rtol=1e-6)


def test_nan_task_is_flagged_frozen_and_isolated(params, arrays):
  clean, _, _ = run(params, *fill(arrays, range(4)), steps=2)
  slots, data = fill(arrays, range(4))
  slots, _, _ = run(params, slots, data, steps=1)
  # Poison task 1's adapter after one step: its next loss is NaN.
  slots = slots._replace(lora=jax.tree.map(lambda x: x.at[1].set(jnp.nan), slots.lora))
  before = jax.tree.map(np.asarray, (slots.lora, slots.opt_state))
  slots, metrics = ttt_step.train_step(params, slots, data, model_config=MODEL, ttt_config=TTT)
  assert list(np.asarray(metrics['status'])) == [0, ttt_step.Status.FAILED, 0, 0]
  assert np.asarray(metrics['finished'])[1] and not np.asarray(metrics['trained'])[1]
  for got, want in zip(leaves((slots.lora, slots.opt_state)), jax.tree.leaves(before)):
    np.testing.assert_array_equal(got[1], want[1])  # frozen: the update was not applied
  for got, want in zip(leaves(slots.lora), leaves(clean.lora)):
    np.testing.assert_array_equal(got[[0, 2, 3]], want[[0, 2, 3]])  # bitwise
  assert list(np.asarray(slots.step)) == [2, 1, 2, 2]


def test_adaptive_stop(params, arrays):
  config = TTTConfig(**{**TTT.__dict__, 'adaptive_stop_loss': 100.0})
  slots, _, metrics = run(params, *fill(arrays, range(4), config), steps=1, config=config)
  assert (np.asarray(metrics['status']) == ttt_step.Status.CONVERGED).all()
  assert (np.asarray(slots.step) == 1).all()


def test_base_weights_are_not_differentiated(params, arrays):
  data = jax.tree.map(jnp.asarray, tl.one_task(arrays, 0))
  batch = ttt_step.draw_batch(data, 0, 0, TTT)
  lora = ttt_step.init_adapter(0, MODEL, TTT)
  grad_fn = jax.value_and_grad(loss.loss_one, argnums=1)
  jaxpr = jax.make_jaxpr(grad_fn, static_argnums=(3, 4))(params, lora, batch, MODEL, TTT.lora)
  shapes = tl.dot_shapes(jaxpr.jaxpr, set())
  base = {tuple(x.shape[-2:]) for x in jax.tree.leaves(params['layers']) if x.ndim == 3}
  base.add(tuple(params['embed'].shape))
  base |= {s[::-1] for s in base}  # either operand order
  dots = {s[-2:] for s in shapes if len(s) >= 2}
  assert len(base) >= 5 and not dots & base, sorted(dots & base)
  # The check can see them: differentiating the base too brings them in.
  full = jax.make_jaxpr(jax.grad(loss.loss_one, argnums=(0, 1)), static_argnums=(3, 4))(
      params, lora, batch, MODEL, TTT.lora
  )
  assert {s[-2:] for s in tl.dot_shapes(full.jaxpr, set()) if len(s) >= 2} & base
  # ...while the adapter gradients are there, [in, r] and [r, out].
  lora_shapes = {tuple(x.shape[-2:]) for x in jax.tree.leaves(lora)}
  assert all(s in dots or s[::-1] in dots for s in lora_shapes)
