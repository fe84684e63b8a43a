"""TTT dataset: leave-n-out, augmented examples, masks, determinism, packing."""

import dataclasses

import numpy as np
import pytest

from ttt_jax.data import format as F
from ttt_jax.data.arc import Pair, Task
from ttt_jax.data.ttt_data import (
    TTTArrays,
    TTTDataConfig,
    build_ttt_examples,
    leave_one_out,
    leave_two_out,
    cut_rows,
    pack_tasks,
    row_length,
)

PLAIN = TTTDataConfig(
    augmentations_per_task=1, d8=False, colors=False, shuffle_order=False, leave_two_out=False
)


def make_task(n_demos: int, seed: int = 0, side: int = 6) -> Task:
  rng = np.random.default_rng(seed)
  grid = lambda: rng.integers(0, 10, rng.integers(2, side + 1, 2)).astype(np.int8)
  return Task(
      f'task{n_demos}',
      tuple(Pair(grid(), grid()) for _ in range(n_demos)),
      (Pair(grid(), None),),
      'memory',
  )


def parse_sequence(tokens):
  """tokens -> list of (input, output) grids, checking the BOS/marker layout."""
  assert tokens[0] == F.BOS
  pairs, rest = [], tokens[1:]
  while len(rest):
    assert rest[0] == F.INPUT
    out_at = int(np.argmax(rest == F.OUTPUT))
    eos_at = int(np.argmax(rest == F.EOS))
    pairs.append((F.decode_grid(rest[1:out_at]), F.decode_grid(rest[out_at + 1 : eos_at + 1])))
    rest = rest[eos_at + 1 :]
  return pairs


def test_leave_one_out_and_two_out_counts():
  task = make_task(4)
  l1o = leave_one_out(task)
  assert len(l1o) == 4
  for i, t in enumerate(l1o):
    assert t.test == (task.train[i],)
    assert t.train == tuple(p for j, p in enumerate(task.train) if j != i)
  l2o = leave_two_out(task)
  assert len(l2o) == 4 * 3
  assert all(len(t.train) == 2 and t.test[0] not in t.train for t in l2o)
  assert len({t.id for t in l2o}) == 12


def test_plain_examples_are_the_leave_one_out_tasks_and_masks_cover_targets():
  task = make_task(4)
  examples, stats = build_ttt_examples(task, PLAIN, seed=0)
  assert stats.num_examples == len(examples) == 4 and not stats.used_leave_two_out
  expected = {
      F.encode_task(t.train, t.test[0].input, t.test[0].output)[0].tobytes(): t
      for t in leave_one_out(task)
  }
  for tokens, mask in examples:
    t = expected[tokens.tobytes()]
    # Masked runs decode, in order, to outputs 2..n-1 of the prompt and the target.
    hits = np.flatnonzero(mask)
    runs = np.split(hits, np.flatnonzero(np.diff(hits) > 1) + 1)
    targets = [p.output for p in t.train[1:]] + [t.test[0].output]
    assert len(runs) == len(targets)
    for run, want in zip(runs, targets):
      assert tokens[run[-1]] == F.EOS
      np.testing.assert_array_equal(F.decode_grid(tokens[run]), want)
    # Nothing else is masked: the count equals the target token count.
    assert mask.sum() == sum(g.shape[0] * (g.shape[1] + 1) + 1 for g in targets)


def test_augmented_examples_are_transformed_leave_one_out_tasks():
  task = make_task(5, seed=1)
  cfg = TTTDataConfig(augmentations_per_task=16, leave_two_out=False)
  examples, stats = build_ttt_examples(task, cfg, seed=3)
  assert stats.num_candidates == 5 * 16 and stats.num_examples == len(examples)
  assert len({t.tobytes() for t, _ in examples}) == len(examples)  # deduplicated
  originals = {(p.input.tobytes(), p.output.tobytes()) for p in task.train}
  # D8 keeps sides up to a swap; a colour permutation keeping 0 keeps each
  # grid's count of zeros: per pair, (sorted sides, zeros) is invariant.
  invariant = lambda x, y: (
      sorted(x.shape),
      sorted(y.shape),
      int((x == 0).sum()),
      int((y == 0).sum()),
  )
  want = sorted(invariant(p.input, p.output) for p in task.train)
  for tokens, mask in examples:
    pairs = parse_sequence(tokens)
    assert sorted(invariant(x, y) for x, y in pairs) == want
    # all_but_first: one masked EOS per target, i.e. every output but the first.
    assert mask[tokens == F.EOS].tolist() == [0, 1, 1, 1, 1]
  # The identity draw is there: some example holds the original pairs.
  assert any(
      {(x.tobytes(), y.tobytes()) for x, y in parse_sequence(t)} == originals for t, _ in examples
  )


def test_determinism_and_seed_dependence():
  task = make_task(3, seed=2)
  cfg = TTTDataConfig(augmentations_per_task=8, max_examples=20)
  a, sa = build_ttt_examples(task, cfg, seed=7)
  b, sb = build_ttt_examples(task, cfg, seed=7)
  c, _ = build_ttt_examples(task, cfg, seed=8)
  assert sa == sb and len(a) == len(b) == 20
  assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
  assert [x[0].tobytes() for x in a] != [x[0].tobytes() for x in c]


def test_leave_two_out_fills_in_only_when_too_few():
  small = make_task(3, seed=3)
  cfg = TTTDataConfig(augmentations_per_task=4, max_examples=250)
  _, stats = build_ttt_examples(small, cfg, seed=0)
  assert stats.used_leave_two_out
  assert stats.num_candidates == 4 * (3 + 3 * 2)
  _, no_l2o = build_ttt_examples(small, dataclasses.replace(cfg, leave_two_out=False), 0)
  assert not no_l2o.used_leave_two_out and no_l2o.num_candidates == 4 * 3
  _, enough = build_ttt_examples(make_task(6), dataclasses.replace(cfg, max_examples=10), 0)
  assert not enough.used_leave_two_out and enough.num_examples == 10


def test_length_filter_counts_what_it_drops():
  # Leave-one-out sequences all hold every demo (same length); leave-two-out
  # ones are shorter: a limit just under the former keeps only the latter.
  task = make_task(4, seed=4, side=10)
  cfg = dataclasses.replace(PLAIN, leave_two_out=True)
  full, _ = build_ttt_examples(task, cfg, seed=0)
  longest = max(len(t) for t, _ in full)
  assert sum(len(t) == longest for t, _ in full) == 4
  kept, stats = build_ttt_examples(task, dataclasses.replace(cfg, seq_len=longest - 1), 0)
  assert all(len(t) < longest for t, _ in kept)
  assert stats.num_too_long == 4 and stats.used_leave_two_out
  assert stats.num_examples == len(kept) == len(full) - 4


def test_training_only_ops_drop_oversized_grids():
  big = Task(
      'big',
      tuple(Pair(np.ones((20, 20), np.int8), np.zeros((20, 20), np.int8)) for _ in range(2)),
      (),
      'memory',
  )
  cfg = TTTDataConfig(augmentations_per_task=32, train_only_prob=1.0, leave_two_out=False)
  examples, stats = build_ttt_examples(big, cfg, seed=0)
  assert stats.num_too_large > 0
  assert stats.num_candidates + stats.num_too_large == 32 * 2
  for tokens, _ in examples:
    assert all(
        x is not None and max(x.shape) <= 30 for pair in parse_sequence(tokens) for x in pair
    )


def test_pack_tasks_shapes_and_padding():
  per_task = [build_ttt_examples(make_task(n, seed=n), PLAIN, 0)[0] for n in (2, 4, 3)]
  seq_len = max(len(t) for ex in per_task for t, _ in ex)
  arrays = pack_tasks(per_task, max_examples=5, seq_len=seq_len)
  assert isinstance(arrays, TTTArrays)
  assert arrays.tokens.shape == arrays.loss_mask.shape == (3, 5, seq_len)
  assert arrays.lengths.shape == (3, 5) and arrays.num_examples.tolist() == [2, 4, 3]
  assert arrays.tokens.dtype == np.int32
  for ti, examples in enumerate(per_task):
    for ni, (tokens, mask) in enumerate(examples):
      n = arrays.lengths[ti, ni]
      assert n == len(tokens)
      np.testing.assert_array_equal(arrays.tokens[ti, ni, :n], tokens)
      np.testing.assert_array_equal(arrays.loss_mask[ti, ni, :n], mask)
      assert (arrays.tokens[ti, ni, n:] == F.PAD).all()
      assert (arrays.loss_mask[ti, ni, n:] == 0).all()
    assert (arrays.tokens[ti, len(examples) :] == F.PAD).all()
    assert (arrays.lengths[ti, len(examples) :] == 0).all()
  with pytest.raises(ValueError, match='max_examples=3'):
    pack_tasks(per_task, max_examples=3, seq_len=seq_len)
  with pytest.raises(ValueError, match='seq_len'):
    pack_tasks(per_task, max_examples=5, seq_len=seq_len - 1)


def test_row_length_is_the_bucket_of_the_longest_row_capped_at_seq_len():
  assert row_length(np.array([90, 130, 0]), 1024, 128) == 256
  assert row_length(np.array([300, 200]), 1024, 128) == 384
  assert row_length(np.array([1100]), 1200, 128) == 1200  # the 1536 bucket, capped
  assert row_length(np.array([90]), 1024, 0) == 1024  # 0: no buckets
  assert row_length(np.zeros(4, np.int32), 1024, 128) == 128  # a task without examples


def test_cut_rows_keeps_every_token_and_refuses_to_cut_one():
  per_task = [build_ttt_examples(make_task(n, seed=n), PLAIN, 0)[0] for n in (2, 4)]
  longest = max(len(t) for ex in per_task for t, _ in ex)
  arrays = pack_tasks(per_task, max_examples=5, seq_len=longest + 40, pack=True)
  cut = cut_rows(arrays, longest)
  assert cut.tokens.shape == cut.loss_mask.shape == cut.segments.shape == (2, 5, longest)
  for name in ('tokens', 'loss_mask', 'segments'):
    np.testing.assert_array_equal(getattr(cut, name), getattr(arrays, name)[..., :longest])
    assert (getattr(arrays, name)[..., longest:] == (F.PAD if name == 'tokens' else 0)).all()
  np.testing.assert_array_equal(cut.lengths, arrays.lengths)
  with pytest.raises(ValueError, match='exceeds'):
    cut_rows(arrays, longest - 1)


def test_config_validation():
  with pytest.raises(ValueError, match='loss'):
    TTTDataConfig(loss='everything')
  with pytest.raises(ValueError, match='train_only_prob'):
    TTTDataConfig(train_only_prob=1.5)
  with pytest.raises(ValueError, match='length_bucket'):
    TTTDataConfig(length_bucket=-1)
  assert hash(TTTDataConfig()) == hash(TTTDataConfig())
  with pytest.raises(ValueError, match='mode'):
    TTTDataConfig(mode='e2e')


# ------------------------------------------------------------------ the paper's arms


def _pair_key(x, y):
  return (x.shape, x.tobytes(), y.shape, y.tobytes())


def test_direct_io_examples_are_single_pairs_with_loss_on_the_output_only():
  task = make_task(4)
  cfg = TTTDataConfig(augmentations_per_task=8, mode='direct_io')
  examples, stats = build_ttt_examples(task, cfg, seed=0)
  assert len(examples) > 4 and not stats.used_leave_two_out
  for tokens, mask in examples:
    ((x, y),) = parse_sequence(tokens)  # one pair: no demonstration before it
    out_at = int(np.flatnonzero(tokens == F.OUTPUT)[0])
    assert np.flatnonzero(mask).tolist() == list(range(out_at + 1, len(tokens)))  # y and EOS
  # The untransformed copy is among them; without augmentations they are the demonstrations.
  demos = {_pair_key(p.input.astype(np.int8), p.output.astype(np.int8)) for p in task.train}
  pairs = {_pair_key(*parse_sequence(t)[0]) for t, _ in examples}
  assert demos <= pairs
  plain, _ = build_ttt_examples(task, dataclasses.replace(PLAIN, mode='direct_io'), seed=0)
  assert sorted(_pair_key(*parse_sequence(t)[0]) for t, _ in plain) == sorted(demos)


def test_no_transformation_data_holds_no_transformed_grid():
  """The "No transformations" arm (docs/TTT.md): d8=False, colors=False (no training-only
  ops): every pair of every example is one of the task's own demonstrations; the
  demonstration order is still shuffled, as the reference's --no_transform keeps it."""
  task = make_task(4)
  demos = {_pair_key(p.input.astype(np.int8), p.output.astype(np.int8)) for p in task.train}
  arm = TTTDataConfig(augmentations_per_task=8, d8=False, colors=False)
  examples, _ = build_ttt_examples(task, arm, seed=0)
  pairs = [_pair_key(x, y) for t, _ in examples for x, y in parse_sequence(t)]
  assert set(pairs) == demos
  # More examples than leave-n-out tasks: the same task in several demonstration orders.
  assert len(examples) > len(leave_one_out(task)) + len(leave_two_out(task))
  # The default recipe on the same task does transform (so the check above can fail).
  augmented, _ = build_ttt_examples(task, TTTDataConfig(augmentations_per_task=8), seed=0)
  assert any(_pair_key(x, y) not in demos for t, _ in augmented for x, y in parse_sequence(t))
