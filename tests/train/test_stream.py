"""Streaming jobs through slots, no recompilation, and kill-and-resume."""

import dataclasses

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
  adapters = {}

  def on_job_done(result, adapter):
    adapters[result.job] = adapter

  results = scheduler.train_stream(
      params,
      jobs,
      lambda t: tl.one_task(arrays, t),
      model_config=MODEL,
      ttt_config=TTT,
      num_slots=NUM_SLOTS,
      max_examples=tl.N,
      seq_len=tl.S,
      on_job_done=on_job_done,
      **kwargs,
  )
  return results, adapters


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_more_jobs_than_slots_all_trained_without_recompiling(params, arrays):
  jobs = [scheduler.Job(task=t, lr=1e-2) for t in range(NUM_TASKS)]
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
      1e-2,
      model_config=MODEL,
      ttt_config=TTT,
  )
  for _ in range(expected_steps[last]):
    slots, _ = ttt_step.train_step(params, slots, data, model_config=MODEL, ttt_config=TTT)
  for x, y in zip(jax.tree.leaves(slots.lora), jax.tree.leaves(adapters[last])):
    np.testing.assert_allclose(np.asarray(x)[0], y, atol=1e-5, rtol=0)


def test_job_without_examples_is_reported_not_trained(params, arrays):
  empty = tl.task_arrays(NUM_TASKS, num_examples=[3, 0, 2, 1, 0, 4, 5], seed=1)
  results, adapters = stream(params, empty, [scheduler.Job(t, 1e-2) for t in range(NUM_TASKS)])
  status = {r.task: r.status for r in results}
  assert status[1] == status[4] == 'no_examples' and adapters[1] is None
  assert all(status[t] == 'done' for t in (0, 2, 3, 5, 6))


def test_failed_job_hands_out_its_initial_adapter_and_the_rest_trains(params, arrays):
  jobs = [scheduler.Job(t, float('nan') if t == 2 else 1e-2) for t in range(4)]  # NaN update
  results, adapters = stream(params, arrays, jobs)
  status = {r.task: r.status for r in results}
  assert status == {0: 'done', 1: 'done', 2: 'failed', 3: 'done'}
  assert next(r.steps for r in results if r.task == 2) == 0
  initial = ttt_step.init_adapter(2, MODEL, TTT)  # job 2's seed defaults to its task
  assert_trees_equal(adapters[2], initial)
  assert all(not np.any(ab['b']) for ab in adapters[2].values())  # B = 0: the base model
  assert all(np.any(adapters[t]['q']['b']) for t in (0, 1, 3))


def test_killed_run_resumes_to_the_same_adapters(params, arrays, tmp_path):
  jobs = [scheduler.Job(task=t, lr=lr) for t in range(4) for lr in (1e-2, 3e-3)]
  straight, want = stream(params, arrays, jobs)
  ckpt = str(tmp_path / 'ckpt')
  _, first = stream(
      params, arrays, jobs, checkpointer=checkpoint.RunCheckpointer(ckpt, 3), stop_after_steps=7
  )  # dies after step 7; the last save was at 6
  assert len(first) < len(jobs)
  results, second = stream(params, arrays, jobs, checkpointer=checkpoint.RunCheckpointer(ckpt, 3))
  assert sorted(first | second) == list(range(len(jobs)))
  for job in range(len(jobs)):
    assert_trees_equal((first | second)[job], want[job])
  assert sorted((r.job, r.steps, r.losses) for r in results) == sorted(
      (r.job, r.steps, r.losses) for r in straight
  )


def test_resume_refuses_a_different_run(params, arrays, tmp_path):
  ckpt = str(tmp_path / 'ckpt')
  jobs = [scheduler.Job(task=t, lr=1e-2) for t in range(4)]
  stream(params, arrays, jobs, checkpointer=checkpoint.RunCheckpointer(ckpt, 2), stop_after_steps=3)
  with pytest.raises(ValueError, match='different run'):
    stream(params, arrays, jobs[:3], checkpointer=checkpoint.RunCheckpointer(ckpt, 2))


def test_a_job_over_the_loss_capacity_is_skipped_and_the_rest_trains(params, arrays):
  needed = [loss.max_targets_per_batch(a.loss_mask, TTT.batch_size) for a in (
      tl.one_task(arrays, t) for t in range(4))]  # fmt: skip
  capacity = sorted(needed)[-1] - 1  # the fullest task does not fit
  ttt_config = dataclasses.replace(TTT, loss_capacity=capacity)
  jobs = [scheduler.Job(task=t, lr=1e-2) for t in range(4)]
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
