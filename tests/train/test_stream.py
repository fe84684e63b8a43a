"""Streaming jobs through slots, no recompilation, and kill-and-resume, also from torn
checkpoints (the real kill -9 during a save is tests/train/test_ttt_kill.py)."""

import dataclasses
import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest

import ttt_testlib as tl
from ttt_jax import checkpoint
from ttt_jax.train import loss, scheduler
from ttt_jax.train import slots as slot_ops
from ttt_jax.train import ttt_step

MODEL, TTT = tl.MODEL, tl.TTT
NUM_TASKS, NUM_SLOTS = 7, 3


@pytest.fixture(scope='module')
def params():
  return tl.base_params()


@pytest.fixture(scope='module')
def arrays():
  return tl.task_arrays(NUM_TASKS, seed=1)


def stream(params, arrays, jobs, **kwargs):
  return tl.stream(params, arrays, jobs, NUM_SLOTS, **kwargs)


assert_trees_equal = tl.assert_trees_equal


def test_more_jobs_than_slots_all_trained_without_recompiling(params, arrays):
  jobs = [scheduler.Job(t, TTT.hyper(lr=1e-2)) for t in range(NUM_TASKS)]
  compiled = ttt_step.train_step._cache_size(), slot_ops.put_slot._cache_size()
  results, adapters = stream(params, arrays, jobs)
  assert ttt_step.train_step._cache_size() - compiled[0] <= 1  # one shape, one compilation
  assert slot_ops.put_slot._cache_size() - compiled[1] <= 2  # slots tree + data tree
  assert sorted(r.job for r in results) == list(range(NUM_TASKS)) == sorted(adapters)
  expected_steps = TTT.epochs * -(-arrays.num_examples // TTT.batch_size)
  for r in results:
    assert r.status == 'done' and r.steps == expected_steps[r.task] == len(r.losses)

  # A longer run of the same shapes compiles nothing new.
  compiled = ttt_step.train_step._cache_size(), slot_ops.put_slot._cache_size()
  stream(params, arrays, jobs + jobs[:2])
  assert (ttt_step.train_step._cache_size(), slot_ops.put_slot._cache_size()) == compiled

  # A job's adapter does not depend on the slot or on its neighbours: train
  # the last task alone in a 1-slot run and compare.
  slots, data = slot_ops.empty_slots(1, tl.N, tl.S, MODEL, TTT)
  last = NUM_TASKS - 1
  slots, data = slot_ops.place_job(
      slots,
      data,
      0,
      tl.one_task(arrays, last),
      last,
      last,
      TTT.hyper(lr=1e-2),
      model_config=MODEL,
      ttt_config=TTT,
  )
  for _ in range(expected_steps[last]):
    slots, _ = ttt_step.train_step(params, slots, data, model_config=MODEL, ttt_config=TTT)
  for x, y in zip(jax.tree.leaves(slots.lora), jax.tree.leaves(adapters[last])):
    np.testing.assert_allclose(np.asarray(x)[0], y, atol=1e-5, rtol=0)


def test_job_without_examples_is_reported_not_trained(params, arrays):
  empty = tl.task_arrays(NUM_TASKS, num_examples=[3, 0, 2, 1, 0, 4, 5], seed=1)
  results, adapters = stream(
      params, empty, [scheduler.Job(t, TTT.hyper(lr=1e-2)) for t in range(NUM_TASKS)]
  )
  status = {r.task: r.status for r in results}
  assert status[1] == status[4] == 'no_examples' and adapters[1] is None
  assert all(status[t] == 'done' for t in (0, 2, 3, 5, 6))


def test_failed_job_hands_out_its_initial_adapter_and_the_rest_trains(params, arrays):
  jobs = [
      scheduler.Job(t, TTT.hyper(lr=float('nan') if t == 2 else 1e-2)) for t in range(4)
  ]  # NaN update
  results, adapters = stream(params, arrays, jobs)
  status = {r.task: r.status for r in results}
  assert status == {0: 'done', 1: 'done', 2: 'failed', 3: 'done'}
  assert next(r.steps for r in results if r.task == 2) == 0
  initial = ttt_step.init_adapter(2, MODEL, TTT)  # job 2's seed defaults to its task
  assert_trees_equal(adapters[2], initial)
  assert all(not np.any(ab['b']) for ab in adapters[2].values())  # B = 0: the base model
  assert all(np.any(adapters[t]['q']['b']) for t in (0, 1, 3))


# The kill-and-resume runs: 4 tasks x 2 lrs through 3 slots.
KILL_JOBS = [scheduler.Job(t, TTT.hyper(lr=lr)) for t in range(4) for lr in (1e-2, 3e-3)]


@pytest.fixture(scope='module')
def uninterrupted(params, arrays):
  return stream(params, arrays, KILL_JOBS)


def _resume_and_compare(params, arrays, ckpt, uninterrupted, save_every, first=None):
  """Resumes from `ckpt`: every job's adapter (of the killed run `first` or of this one)
  and result as the uninterrupted run's."""
  results, second = stream(
      params, arrays, KILL_JOBS, checkpointer=checkpoint.RunCheckpointer(ckpt, save_every)
  )
  adapters = (first or {}) | second
  want_results, want = uninterrupted
  assert sorted(adapters) == list(range(len(KILL_JOBS)))
  for job in range(len(KILL_JOBS)):
    assert_trees_equal(adapters[job], want[job])
  assert sorted((r.job, r.steps, r.losses, r.tokens) for r in results) == sorted(
      (r.job, r.steps, r.losses, r.tokens) for r in want_results
  )


def _killed(params, arrays, ckpt, save_every: int) -> dict:
  """A run saving every `save_every` steps that dies after step 7: its handed-out adapters."""
  _, first = stream(
      params,
      arrays,
      KILL_JOBS,
      checkpointer=checkpoint.RunCheckpointer(ckpt, save_every),
      stop_after_steps=7,
  )
  assert len(first) < len(KILL_JOBS)
  return first


def test_killed_run_resumes_to_the_same_adapters(params, arrays, uninterrupted, tmp_path):
  ckpt = str(tmp_path / 'ckpt')
  first = _killed(params, arrays, ckpt, 3)  # the last save was at 6
  _resume_and_compare(params, arrays, ckpt, uninterrupted, 3, first)


def _killed_every_2(params, arrays, ckpt) -> dict:
  """Saves at 2, 4 and 6 and dies after step 7: steps 4 and 6 are kept (max_to_keep 2)."""
  first = _killed(params, arrays, ckpt, 2)
  assert sorted(os.listdir(ckpt)) == ['4', '6']
  return first


def _largest(step_dir: str, pattern: str) -> str:
  return max(glob.glob(os.path.join(step_dir, pattern)), key=os.path.getsize)


# orbax leaves unretrieved futures behind a failed read: noise, not a failure.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize(
    'pattern, kind',
    [
        ('host/metadata', 'truncated'),  # the host loop's JSON
        ('slots/manifest.ocdbt', 'zero_length'),
        ('slots/ocdbt.process_0/d/*', 'random_bytes'),  # the arrays' bytes
        ('slots/d/*', 'missing'),
    ],
)
def test_a_torn_latest_step_is_skipped_for_the_one_before(
    params, arrays, uninterrupted, tmp_path, damage, caplog, pattern, kind
):
  ckpt = str(tmp_path / 'ckpt')
  first = _killed_every_2(params, arrays, ckpt)
  damage(_largest(os.path.join(ckpt, '6'), pattern), kind)
  with caplog.at_level(logging.INFO):
    _resume_and_compare(params, arrays, ckpt, uninterrupted, 2, first)
  assert f'checkpoint step 6 in {ckpt} cannot be restored' in caplog.text
  assert 'resumed TTT from step 4' in caplog.text
  assert os.path.isdir(os.path.join(ckpt, 'torn_6'))  # set aside for a look


def test_every_step_torn_restarts_the_jobs(params, arrays, uninterrupted, tmp_path, damage):
  ckpt = str(tmp_path / 'ckpt')
  first = _killed_every_2(params, arrays, ckpt)
  for step in ('4', '6'):
    damage(_largest(os.path.join(ckpt, step), 'host/metadata'), 'zero_length')
  _resume_and_compare(params, arrays, ckpt, uninterrupted, 2, first)
  assert {'torn_4', 'torn_6'} <= set(os.listdir(ckpt))


def test_a_save_killed_before_orbax_renamed_it_is_ignored_and_removed(
    params, arrays, uninterrupted, tmp_path, damage
):
  """What a kill -9 in the middle of a save leaves: a half-written tmp directory."""
  ckpt = str(tmp_path / 'ckpt')
  first = _killed_every_2(params, arrays, ckpt)
  tmp = os.path.join(ckpt, '8.orbax-checkpoint-tmp-1234567')
  shutil.copytree(os.path.join(ckpt, '6'), tmp)
  damage(_largest(tmp, 'slots/ocdbt.process_0/d/*'), 'truncated')
  os.remove(os.path.join(tmp, 'commit_success.txt'))
  _resume_and_compare(params, arrays, ckpt, uninterrupted, 2, first)
  assert not os.path.exists(tmp)


def test_resume_refuses_a_different_run(params, arrays, tmp_path):
  ckpt = str(tmp_path / 'ckpt')
  jobs = [scheduler.Job(t, TTT.hyper(lr=1e-2)) for t in range(4)]
  stream(params, arrays, jobs, checkpointer=checkpoint.RunCheckpointer(ckpt, 2), stop_after_steps=3)
  with pytest.raises(ValueError, match='different run'):
    stream(params, arrays, jobs[:3], checkpointer=checkpoint.RunCheckpointer(ckpt, 2))


def test_a_job_over_the_loss_capacity_is_skipped_and_the_rest_trains(params, arrays):
  needed = [loss.max_targets_per_batch(a.loss_mask, TTT.batch_size) for a in (
      tl.one_task(arrays, t) for t in range(4))]  # fmt: skip
  capacity = sorted(needed)[-1] - 1  # the fullest task does not fit
  ttt_config = dataclasses.replace(TTT, loss_capacity=capacity)
  jobs = [scheduler.Job(t, TTT.hyper(lr=1e-2)) for t in range(4)]
  results = scheduler.train_stream(
      params,
      jobs,
      lambda t: tl.one_task(arrays, t),
      model_config=MODEL,
      ttt_config=ttt_config,
      num_slots=2,
      max_examples=tl.N,
      seq_len=tl.S,
  )
  status = {r.task: r.status for r in results}
  for t in range(4):
    assert status[t] == ('over_capacity' if needed[t] > capacity else 'done'), (t, needed)
