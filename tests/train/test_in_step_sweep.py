"""The in-step sweep: jobs that differ in lr, LoRA alpha and rank, weight decay, warmup
and step cap train side by side in one jitted step, each as it would alone.

Alone means a run of that one job under its own recipe (`hyper.of(TTT)`), with the same
number of slots: a different slot count alone changes float32 rounding (the per-slot
program is compiled differently; 6e-5 on these adapters after 6 steps, on the code
before the sweep too). Within one slot count the masked slots contract over zero
columns and clip over a longer vector: sums in another order, 1e-8 here, so the
adapters are compared to 1e-6."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttt_testlib as tl
from ttt_jax.train import scheduler, slots as slot_ops, ttt_step

MODEL, TTT = tl.MODEL, tl.TTT  # rank 4, alpha 8, lr 1e-2, wd 0.01, no warmup, no cap
TOL = 1e-6


@pytest.fixture(scope='module')
def params():
  return tl.base_params()


@pytest.fixture(scope='module')
def arrays():
  return tl.task_arrays(4, num_examples=[5, 4, 5, 3], seed=0)


def _alone(params, arrays, job: scheduler.Job, num_slots: int):
  """(result, adapter) of `job` trained alone under its own recipe."""
  own = job.hyper.of(TTT)
  out = {}
  (result,) = scheduler.train_stream(
      params,
      [scheduler.Job(job.task, own.hyper(), job.seed)],
      lambda t: tl.one_task(arrays, t),
      model_config=MODEL,
      ttt_config=own,
      num_slots=num_slots,
      max_examples=tl.N,
      seq_len=tl.S,
      on_job_done=lambda r, adapter: out.setdefault('adapter', adapter),
  )
  return result, out['adapter']


def _batch_tokens(arrays, job: scheduler.Job, steps: int) -> int:
  """The real tokens of a job's first `steps` batches, drawn here one by one."""
  data = jax.tree.map(jnp.asarray, tl.one_task(arrays, job.task))
  seed = job.task if job.seed is None else job.seed
  own = job.hyper.of(TTT)
  return sum(int(ttt_step.draw_batch(data, seed, s, own)['mask'].sum()) for s in range(steps))


def _check_equal_alone(params, arrays, jobs, num_slots):
  results, adapters = tl.stream(params, arrays, jobs, num_slots=num_slots)
  for result in results:
    job = jobs[result.job]
    want_result, want = _alone(params, arrays, job, num_slots)
    assert result.hyper == job.hyper and result.status == want_result.status == 'done'
    assert result.steps == want_result.steps and result.losses == pytest.approx(
        want_result.losses, abs=TOL
    )
    assert result.tokens == want_result.tokens == _batch_tokens(arrays, job, result.steps)
    for path, got in jax.tree_util.tree_flatten_with_path(adapters[result.job])[0]:
      ref = want
      for key in path:
        ref = ref[key.key]
      assert got.shape == ref.shape  # the job's own rank
      np.testing.assert_allclose(got, ref, atol=TOL, rtol=0, err_msg=f'job {result.job} {path}')
  return results


def test_a_rank_8_slot_beside_a_rank_16_slot_equals_each_alone(params, arrays):
  """Slots of rank 16 and 8 in one step (the rank-8 one masked to 16), the second also
  with its own alpha, weight decay, warmup, step cap and lr."""
  jobs = [
      scheduler.Job(0, TTT.hyper(rank=16)),
      scheduler.Job(
          1,
          TTT.hyper(rank=8, alpha=32.0, weight_decay=0.5, warmup_frac=0.5, max_steps=3, lr=3e-3),
      ),
  ]
  results = _check_equal_alone(params, arrays, jobs, num_slots=2)
  assert sorted(r.steps for r in results) == [3, 6]  # the cap of job 1


@pytest.mark.slow
def test_each_swept_knob_alone_equals_its_own_run(params, arrays):
  """One knob per job, six jobs streaming through three slots (refilled mid-run)."""
  jobs = [
      scheduler.Job(0, TTT.hyper(rank=8)),
      scheduler.Job(1, TTT.hyper(rank=2)),
      scheduler.Job(2, TTT.hyper(alpha=32.0)),
      scheduler.Job(3, TTT.hyper(weight_decay=0.5)),
      scheduler.Job(0, TTT.hyper(warmup_frac=0.5)),
      scheduler.Job(1, TTT.hyper(max_steps=3, lr=3e-3)),
  ]
  _check_equal_alone(params, arrays, jobs, num_slots=3)


def test_a_masked_slots_padding_stays_exactly_zero(params, arrays):
  """A rank-8 job in rank-16 slots: the columns of A and rows of B past 8, and their Adam
  moments, are exactly zero after training with weight decay (zero gradients give zero
  moments, and 0 / (sqrt(0) + eps) and the decay of 0 are 0)."""
  slot_config = dataclasses.replace(TTT, lora=dataclasses.replace(TTT.lora, rank=16))
  hypers = [TTT.hyper(rank=16), TTT.hyper(rank=8, weight_decay=0.5)]
  slots, data = tl.fill_slots(arrays, [0, 1], slot_config, hypers)
  for _ in range(3):
    slots, _ = ttt_step.train_step(params, slots, data, model_config=MODEL, ttt_config=slot_config)
  adam = slots.opt_state.inner_state[1][0]  # clip, then adamw's ScaleByAdamState
  moments = [ttt_step.unflat_T(m, slots.lora) for m in (adam.mu, adam.nu)]
  for tree in (slots.lora, *moments):
    for ab in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, dict) and 'a' in x):
      a, b = np.asarray(ab['a']), np.asarray(ab['b'])
      assert not a[1, ..., 8:].any() and not b[1, ..., 8:, :].any()
      assert a[1, ..., :8].any() and a[0, ..., 8:].any()  # the rest is not zero
  assert np.abs(np.asarray(slots.lora['q']['b'])[1, :, :8]).max() > 0  # B trained
  with pytest.raises(ValueError, match='rank 32, more than'):
    slot_ops.place_job(
        slots, data, 0, tl.one_task(arrays, 0), 0, 0, TTT.hyper(rank=32), model_config=MODEL,
        ttt_config=slot_config,
    )  # fmt: skip
