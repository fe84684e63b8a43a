"""Packed TTT rows: several whole examples per row, with segment ids, give exactly the
losses and gradients of the same examples one per row (the compute follows real tokens)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.data.test_ttt_data import PLAIN, make_task
from tests.train import ttt_testlib as tl
from ttt_jax.data import ttt_data
from ttt_jax.formats.positions import grid_positions
from ttt_jax.model.lora import init_lora
from ttt_jax.train import ttt_step
from ttt_jax.train.loss import loss_one

SEQ_LEN = 256


def _examples(num_demos=4, seed=0):
  examples, _ = ttt_data.build_ttt_examples(make_task(num_demos, seed, side=3), PLAIN, seed)
  assert 2 <= len(examples) and max(len(t) for t, _ in examples) < SEQ_LEN // 2
  return examples


def _batch(arrays: ttt_data.TTTArrays, rows) -> dict:
  batch = {
      'tokens': arrays.tokens[0, rows],
      'mask': np.arange(SEQ_LEN)[None, :] < arrays.lengths[0, rows, None],
      'loss_mask': arrays.loss_mask[0, rows],
  }
  if arrays.segments is not None:
    batch['segments'] = arrays.segments[0, rows]
  return batch


def test_pack_rows_first_fit_decreasing():
  assert ttt_data.pack_rows([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
  rows = ttt_data.pack_rows([3] * 5, 10)
  assert rows == [[0, 1, 2], [3, 4]]


def test_pack_tasks_keeps_every_example_once_in_contiguous_segments():
  examples = _examples()
  unpacked = ttt_data.pack_tasks([examples], 8, SEQ_LEN)
  packed = ttt_data.pack_tasks([examples], 8, SEQ_LEN, pack=True)
  assert unpacked.num_examples[0] == len(examples) > packed.num_examples[0]
  assert unpacked.segments is None  # one example per row: kernels that take lengths
  found = []
  for r in range(packed.num_examples[0]):
    seg = packed.segments[0, r]
    length = packed.lengths[0, r]
    assert (seg[:length] > 0).all() and (seg[length:] == 0).all()
    assert (np.diff(seg[:length]) >= 0).all()  # segments 1, 1, ..., 2, 2, ...: contiguous
    for s in range(1, seg.max() + 1):
      span = seg == s
      found.append((packed.tokens[0, r, span].tolist(), packed.loss_mask[0, r, span].tolist()))
  assert sorted(found) == sorted((t.tolist(), m.tolist()) for t, m in examples)
  assert (packed.lengths[0, packed.num_examples[0] :] == 0).all()


def test_grid_positions_restart_in_every_segment():
  examples = _examples()
  packed = ttt_data.pack_tasks([examples], 8, SEQ_LEN, pack=True)
  tokens, segments = packed.tokens[0, 0], packed.segments[0, 0]
  positions = np.asarray(grid_positions(tokens, segments))
  for s in range(1, segments.max() + 1):
    span = segments == s
    np.testing.assert_array_equal(positions[span], np.asarray(grid_positions(tokens[span])))


@pytest.mark.parametrize('positions', ['sequential', 'grid'])
@pytest.mark.parametrize('attention_impl', ['blockwise', 'xla'])
def test_packed_loss_and_grads_equal_unpacked(positions, attention_impl):
  config = tl.MODEL.replace(positions=positions, attention_impl=attention_impl)
  params = tl.base_params(config)
  adapter = init_lora(jax.random.key(3), config, tl.TTT.lora)
  adapter = jax.tree.map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.key(4), x.shape), adapter
  )
  examples = _examples()
  unpacked = ttt_data.pack_tasks([examples], 8, SEQ_LEN)
  packed = ttt_data.pack_tasks([examples], 8, SEQ_LEN, pack=True)
  value_and_grad = jax.jit(
      jax.value_and_grad(lambda a, b: loss_one(params, a, b, config, tl.TTT.lora))
  )
  loss_u, grads_u = value_and_grad(adapter, _batch(unpacked, np.arange(len(examples))))
  loss_p, grads_p = value_and_grad(adapter, _batch(packed, np.arange(packed.num_examples[0])))
  assert np.isfinite(float(loss_u))
  np.testing.assert_allclose(float(loss_p), float(loss_u), rtol=1e-6)
  for g_p, g_u in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads_u)):
    np.testing.assert_allclose(np.asarray(g_p), np.asarray(g_u), rtol=1e-4, atol=1e-6)


def test_train_step_trains_packed_rows():
  from ttt_jax.train import slots as slot_ops  # pylint: disable=import-outside-toplevel

  examples = _examples()
  packed = ttt_data.pack_tasks([examples], 8, SEQ_LEN, pack=True)
  data = jax.tree.map(lambda x: jnp.asarray(x[0]), packed)
  batch = ttt_step.draw_batch(data, 0, 0, tl.TTT)
  for row, segments in zip(np.asarray(batch['tokens']), np.asarray(batch['segments'])):
    match = [r for r in range(packed.num_examples[0]) if (packed.tokens[0, r] == row).all()]
    assert match and (packed.segments[0, match[0]] == segments).all()
  assert int(batch['segments'].max()) >= 2  # a row holds several examples

  slots, slot_data = slot_ops.empty_slots(1, 8, SEQ_LEN, tl.MODEL, tl.TTT, packed=True)
  slots, slot_data = slot_ops.place_job(
      slots,
      slot_data,
      0,
      jax.tree.map(lambda x: x[0], packed),
      0,
      0,
      tl.TTT.hyper(),
      model_config=tl.MODEL,
      ttt_config=tl.TTT,
  )
  params = tl.base_params()
  losses = []
  for _ in range(2):
    slots, metrics = ttt_step.train_step(
        params, slots, slot_data, model_config=tl.MODEL, ttt_config=tl.TTT
    )
    losses.append(float(metrics['loss'][0]))
    assert bool(metrics['trained'][0])
  assert all(np.isfinite(losses))
  # One epoch is a pass over the rows: ceil(rows / batch) steps.
  assert int(slots.total_steps[0]) == tl.TTT.epochs * -(-int(packed.num_examples[0]) // 2)
