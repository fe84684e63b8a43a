"""The stage-1 stream: deterministic, resumable, consistent augmentations, no leaks."""

import numpy as np
import pytest

from ttt_jax.data import augment, pretrain_data as pd
from ttt_jax.data.arc import Pair, Task, load_tasks, pair_hash
from ttt_jax.data.format import BOS, PAD


def _task(task_id: str, seed: int, num_pairs: int = 4, side: int = 4) -> Task:
  rng = np.random.default_rng(seed)
  pairs = [
      Pair(g, np.flipud(g))
      for g in (rng.integers(0, 10, (side, side + 1)).astype(np.int8) for _ in range(num_pairs))
  ]
  return Task(task_id, tuple(pairs[:-1]), (pairs[-1],), 'test')


TASKS = [_task(f't{i}', i, num_pairs=3 + i % 3, side=2 + i % 4) for i in range(10)]
CFG = pd.PretrainDataConfig(
    max_len=160,
    batch_size=3,
    bucket_steps=2,
    pad_multiple=32,
    variant_prob=0.5,
    train_only_prob=0.3,
    seed=7,
)


def _same(a: dict, b: dict) -> bool:
  return all(np.array_equal(a[k], b[k]) for k in ('tokens', 'mask', 'loss_mask'))


def test_stream_is_deterministic_by_seed():
  first, second = pd.PretrainStream(TASKS, CFG), pd.PretrainStream(TASKS, CFG)
  other = pd.PretrainStream(TASKS, pd.PretrainDataConfig(**{**CFG.__dict__, 'seed': 8}))
  assert all(_same(first.batch(k), second.batch(k)) for k in range(6))
  assert not all(_same(first.batch(k), other.batch(k)) for k in range(6))


def test_restart_at_step_k_gives_the_same_batches():
  uninterrupted = [pd.PretrainStream(TASKS, CFG).batch(k) for k in range(8)]
  resumed = pd.PretrainStream(TASKS, CFG)  # fresh object, nothing but (seed, step)
  for k in (5, 3, 6, 7):  # any order, mid-bucket included
    assert _same(resumed.batch(k), uninterrupted[k])


def test_batches_are_well_formed():
  stream = pd.PretrainStream(TASKS, CFG)
  for k in range(6):
    batch = stream.batch(k)
    B, S = batch['tokens'].shape
    assert B == CFG.batch_size and S % CFG.pad_multiple == 0 and S <= CFG.max_len
    assert (batch['tokens'][:, 0] == BOS).all()
    assert ((batch['tokens'] == PAD) == (batch['mask'] == 0)).all()
    assert (batch['loss_mask'] <= batch['mask']).all() and batch['loss_mask'].sum() > 0


def test_epochs_visit_every_task_once():
  stream = pd.PretrainStream(TASKS, CFG)
  n = len(stream.tasks)
  for epoch in range(2):
    seen = sorted(stream.task_index(i) for i in range(epoch * n, (epoch + 1) * n))
    assert seen == list(range(n))


def test_too_long_tasks_are_dropped_and_sequences_cut():
  long_task = _task('long', 0, num_pairs=6, side=8)  # 8x9 pairs: 155 tokens each
  cfg = pd.PretrainDataConfig(
      max_len=400, batch_size=2, bucket_steps=1, d8=False, variant_prob=0.0, seed=0
  )
  stream = pd.PretrainStream([long_task, _task('huge', 1, side=20)], cfg)
  assert stream.num_unfit_tasks == 1 and [t.id for t in stream.tasks] == ['long']
  tokens, _ = stream.example(0)
  assert len(tokens) <= 400 and stream.stats.demos_cut == 1


@pytest.mark.parametrize('mode', pd.VARIANT_MODES)
@pytest.mark.parametrize('k', [1, 4, 6])
def test_geometric_variant_is_a_consistent_task(mode, k):
  pairs = [*TASKS[3].train, *TASKS[3].test]
  variant = pd.geometric_variant(pairs, mode, k)
  inverse = int(augment.invert_d8(k))
  undo_in = (lambda g: augment.numpy_d8(g, inverse)) if mode != 'output' else (lambda g: g)
  undo_out = (lambda g: augment.numpy_d8(g, inverse)) if mode != 'input' else (lambda g: g)
  for old, new in zip(pairs, variant):
    assert np.array_equal(undo_in(new.input), old.input)
    assert np.array_equal(undo_out(new.output), old.output)
    # The task's rule (flip_ud) composed with k still maps every new input to its output.
    assert np.array_equal(
        new.output,
        augment.numpy_d8(np.flipud(undo_in(new.input)), k)
        if mode != 'input'
        else np.flipud(undo_in(new.input)),
    )


def test_colour_permutation_keeps_background():
  rng = np.random.default_rng(0)
  perm = np.asarray(augment.numpy_color_permutation(rng))
  assert perm[0] == 0 and sorted(perm) == list(range(10))
  out = pd.d8_and_colors([Pair(np.array([[0, 1], [2, 3]]), np.array([[3]]))], 0, perm)
  assert np.array_equal(out[0].input, perm[[[0, 1], [2, 3]]])


def test_split_is_by_task_id_and_seeded():
  train, val = pd.split_tasks(TASKS, 0.3, seed=0)
  assert {t.id for t in train} | {t.id for t in val} == {t.id for t in TASKS}
  assert not {t.id for t in train} & {t.id for t in val}
  again, _ = pd.split_tasks(TASKS[::-1], 0.3, seed=0)
  assert {t.id for t in again} == {t.id for t in train}


def test_arc2_train_against_arc1_eval_is_guarded():
  tasks, report = pd.load_training_tasks('arc2/train', 'arc1/eval')
  eval_tasks, _ = load_tasks('arc1/eval')
  eval_pairs = {pair_hash(p) for t in eval_tasks for p in (*t.train, *t.test)}
  assert report['contaminated_dropped'] > 100  # most arc1/eval tasks are in arc2/train
  assert len(tasks) == report['loaded']['arc2/train'] - report['contaminated_dropped']
  assert not any(pair_hash(p) in eval_pairs for t in tasks for p in (*t.train, *t.test))


def test_validation_examples_prompt_is_a_prefix():
  examples, too_long = pd.validation_examples(TASKS[:4], CFG, max_examples=10)
  assert len(examples) + too_long == 4
  for e in examples:
    assert np.array_equal(e['tokens'][: len(e['prompt'])], e['prompt'])
