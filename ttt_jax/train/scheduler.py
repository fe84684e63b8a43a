"""The host side of TTT: keeps the slots of the vmapped step busy over a long job list.

A job is one adapter to train (a task under its knobs, a train/hyper.py Hyper: lr, LoRA
rank and alpha, weight decay, warmup, step cap). The slots have the largest rank of the
jobs; each adapter is handed out at its own rank. The scheduler fills
every slot, runs `ttt_step.train_step`, hands each finished adapter to
`on_job_done` and places the next job in the freed slot, saving a resumable
checkpoint every `save_every` steps. The host dispatches step N before
reading step N-1's metrics, so the device never waits on the host, except at
checkpoints and when a job finishes (its adapter is read back and the slot
refilled).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import with_rank
from ttt_jax.train import slots as slot_ops
from ttt_jax.train import ttt_step
from ttt_jax.train.loss import max_targets_per_batch
from ttt_jax.train.hyper import Hyper, slot_config
from ttt_jax.train.ttt_config import TTTConfig
from ttt_jax.train.ttt_step import Status


@dataclasses.dataclass(frozen=True)
class Job:
  """Train an adapter for task `task` (an index into the run's tasks) with the knobs
  `hyper` (TTTConfig.hyper()); `seed` seeds its adapter init and data order (None: the
  task index)."""

  task: int
  hyper: Hyper
  seed: int | None = None


@dataclasses.dataclass(frozen=True)
class JobResult:
  job: int
  task: int
  hyper: Hyper
  status: str  # 'done' | 'converged' | 'failed' | 'no_examples' | 'over_capacity'
  steps: int
  losses: tuple[float | None, ...]  # one per step run (None where not finite)
  seconds: float  # wall time from placement to finish
  tokens: int | None  # real tokens of its trained steps' batches (None: not recorded)

  @classmethod
  def from_record(cls, record: dict) -> JobResult:
    """A result from its `dataclasses.asdict` (a ttt_metrics.jsonl line; extra keys
    ignored)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in record.items() if k in fields}
    return cls(**{**values, 'hyper': Hyper(**record['hyper']), 'losses': tuple(record['losses'])})


@dataclasses.dataclass
class HostState:
  """The host loop's progress, saved as JSON beside the slots in a checkpoint."""

  fingerprint: str  # the run it belongs to (jobs, configs, shapes)
  global_step: int = 0
  next_job: int = 0  # the first position of the schedule not yet placed or passed through
  losses: dict[str, list] = dataclasses.field(default_factory=dict)  # running job -> losses
  tokens: dict[str, int] = dataclasses.field(default_factory=dict)  # running job -> tokens
  started: dict[str, float] = dataclasses.field(default_factory=dict)  # running job -> time
  done: list[dict] = dataclasses.field(default_factory=list)  # finished JobResults


def _fingerprint(scheduled, model_config, ttt_config, num_slots, max_examples, seq_len) -> str:
  return json.dumps(
      [
          [(i, j.task, dataclasses.astuple(j.hyper), j.seed) for i, j in scheduled],
          repr(model_config),
          repr(ttt_config),
          num_slots,
          max_examples,
          seq_len,
      ]
  )


class Scheduler:
  """Streams `jobs` through `num_slots` slots; `run()` returns every job's result.

  `task_data(task)` gives one task's arrays shaped [max_examples, seq_len].
  `ttt_config` is the recipe of every knob not in a job's Hyper; the slots get the
  largest rank of `jobs` (hyper.slot_config).
  `schedule` names the jobs this scheduler runs, in order (indices into `jobs`; default
  all): a run whose tasks train at several row lengths streams each length's jobs
  through a scheduler of its own, and results keep the run-wide job indices.
  `on_job_done(result, adapter)` receives each finished adapter as host numpy
  (None for a task with no examples), exactly once per run, but possibly
  again after a resume for jobs finished after the last checkpoint.
  `on_step(global_step, scalars)` receives each step's means over the slots it
  trained (loss, lr, grad_norm), the running slots, and tokens/s since the
  previous step. `finished` holds jobs an earlier run already finished and
  handed out (by job index): they are not trained again, their results pass
  through (`on_job_done(result, None)`).
  """

  def __init__(
      self,
      base_params: Any,
      jobs: Sequence[Job],
      task_data: Callable[[int], TTTArrays],
      *,
      model_config: ModelConfig,
      ttt_config: TTTConfig,
      num_slots: int,
      max_examples: int,
      seq_len: int,
      packed: bool = False,
      mesh: Mesh | None = None,
      on_job_done: Callable[[JobResult, Any], None] | None = None,
      on_step: Callable[[int, dict], None] | None = None,
      finished: dict[int, JobResult] | None = None,
      schedule: Sequence[int] | None = None,
  ):
    self.base_params, self.jobs, self.task_data = base_params, list(jobs), task_data
    self.schedule = list(range(len(self.jobs)) if schedule is None else schedule)
    if len(set(self.schedule)) != len(self.schedule) or not all(
        0 <= i < len(self.jobs) for i in self.schedule
    ):
      raise ValueError(f'schedule {self.schedule} must name distinct jobs of 0..{len(jobs) - 1}')
    ttt_config = slot_config(ttt_config, [job.hyper for job in self.jobs])
    self.statics = dict(model_config=model_config, ttt_config=ttt_config)
    self.ttt_config, self.mesh = ttt_config, mesh
    self.shape = (max_examples, seq_len)
    self.on_job_done = on_job_done or (lambda result, adapter: None)
    self.on_step = on_step
    self._last_collect = time.perf_counter()
    self.finished = finished or {}
    self.packed = packed
    self.slots, self.data = slot_ops.empty_slots(
        num_slots, max_examples, seq_len, model_config, ttt_config, mesh, packed=packed
    )
    scheduled = [(i, self.jobs[i]) for i in self.schedule]
    self.host = HostState(
        _fingerprint(scheduled, model_config, ttt_config, num_slots, max_examples, seq_len)
    )
    self.running: set[int] = set()  # slots with a RUNNING job

  def run(self, checkpointer=None, stop_after_steps: int | None = None) -> list[JobResult]:
    """Trains every job. With a `checkpointer` (checkpoint.RunCheckpointer) it resumes from
    the latest save and saves every `save_every` global steps. `stop_after_steps` stops
    after that many global steps without saving (what a killed run leaves; for tests)."""
    # A rerun after the stream ended does not resume: refilling passes every job through.
    ended = all(i in self.finished for i in self.schedule)
    restored = None
    if checkpointer is not None and not ended:
      # A torn step is skipped (the one before is used); none readable: start afresh.
      restored = checkpointer.restore_latest(self.slots, self._check_checkpoint)
    if restored is None:
      for slot in range(len(self.slots.step)):
        self._refill(slot)
    else:
      self._resume(*restored)
    pending = None
    while self.running or pending is not None:
      metrics = None
      if self.running:
        self.slots, metrics = ttt_step.train_step(
            self.base_params, self.slots, self.data, mesh=self.mesh, **self.statics
        )
        self.host.global_step += 1
        metrics = {**metrics, 'global_step': self.host.global_step}
      if pending is not None:
        self._collect(pending)
      pending = metrics
      if stop_after_steps is not None and self.host.global_step >= stop_after_steps:
        break
      step = self.host.global_step
      if metrics is not None and checkpointer is not None and checkpointer.should_save(step):
        self._collect(pending)
        pending = None
        checkpointer.save(step, self.slots, dataclasses.asdict(self.host))
    if checkpointer is not None:
      checkpointer.close()
    return [JobResult.from_record(r) for r in self.host.done]

  def _check_checkpoint(self, step: int, host: dict) -> None:
    if host.get('fingerprint') != self.host.fingerprint:
      raise ValueError(
          f'checkpoint step {step} is of a different run (jobs, model, TTT config or slot '
          'shapes differ); use a fresh workdir'
      )

  def _resume(self, step: int, slots: Any, host: dict) -> None:
    self.slots, self.host = slots, HostState(**host)
    status, task = jax.device_get((self.slots.status, self.slots.task))
    self.running = {int(s) for s in np.flatnonzero(status == Status.RUNNING)}
    for slot in sorted(self.running):
      self.data = slot_ops.put_slot(
          self.data, jax.numpy.int32(slot), self._arrays(int(task[slot])), mesh=self.mesh
      )
    logging.info(
        'resumed TTT from step %d: %d jobs done, %d running',
        step,
        len(self.host.done),
        len(self.running),
    )

  def _arrays(self, task: int) -> TTTArrays:
    """One task's examples, checked against the slot shapes."""
    arrays = jax.tree.map(np.asarray, self.task_data(task))
    if arrays.tokens.shape != self.shape or arrays.lengths.shape != self.shape[:1]:
      raise ValueError(
          f'task_data({task}): tokens {arrays.tokens.shape}, lengths {arrays.lengths.shape}; '
          f'expected {self.shape}, {self.shape[:1]}'
      )
    if (arrays.segments is not None) != self.packed:
      raise ValueError(
          f'task_data({task}): packed={arrays.segments is not None}, the run packed={self.packed}'
      )
    return arrays

  def _over_capacity(self, index: int, arrays: TTTArrays) -> bool:
    """Whether a batch of the job's examples may hold more targets than the LM head's
    capacity (its loss would be NaN): the job is not trained, the run goes on."""
    capacity = self.ttt_config.loss_capacity
    needed = max_targets_per_batch(arrays.loss_mask, self.ttt_config.batch_size)
    if capacity is None or needed <= capacity:
      return False
    logging.error(
        'job %d (task %d): a batch can hold %d target tokens, more than '
        'TTTConfig.loss_capacity=%d; not trained (raise --config.ttt.loss_capacity)',
        index,
        self.jobs[index].task,
        needed,
        capacity,
    )
    return True

  def _finish(self, result: JobResult, adapter: Any) -> None:
    self.host.done.append(dataclasses.asdict(result))
    self.on_job_done(result, adapter)

  def _refill(self, slot: int) -> None:
    """Places the next job that has examples in `slot` (leaves it idle when none is left)."""
    while self.host.next_job < len(self.schedule):
      index = self.schedule[self.host.next_job]
      self.host.next_job += 1
      if index in self.finished:
        self._finish(self.finished[index], None)
        continue
      job = self.jobs[index]
      arrays = self._arrays(job.task)
      if int(arrays.num_examples) == 0 or self._over_capacity(index, arrays):
        status = 'no_examples' if int(arrays.num_examples) == 0 else 'over_capacity'
        self._finish(JobResult(index, job.task, job.hyper, status, 0, (), 0.0, 0), None)
        continue
      self.slots, self.data = slot_ops.place_job(
          self.slots,
          self.data,
          slot,
          arrays,
          job.task,
          index,
          job.hyper,
          mesh=self.mesh,
          job_seed=job.seed,
          **self.statics,
      )
      self.host.started[str(index)] = time.time()
      self.host.losses[str(index)] = []
      self.host.tokens[str(index)] = 0
      self.running.add(slot)
      return

  def _collect(self, metrics: dict) -> None:
    """Records one step's losses; hands out finished jobs and refills their slots."""
    m = jax.device_get(metrics)
    if self.on_step is not None:
      self.on_step(int(m['global_step']), self._step_scalars(m))
    for slot in np.flatnonzero(m['trained'] | m['finished']):
      loss, job = float(m['loss'][slot]), str(int(m['job'][slot]))
      self.host.losses[job].append(loss if np.isfinite(loss) else None)
      self.host.tokens[job] += int(m['tokens'][slot]) if m['trained'][slot] else 0
    for slot in map(int, np.flatnonzero(m['finished'])):
      index = int(m['job'][slot])
      job = self.jobs[index]
      result = JobResult(
          job=index,
          task=job.task,
          hyper=job.hyper,
          status=str(Status(int(m['status'][slot]))),
          steps=int(m['step'][slot]),
          losses=tuple(self.host.losses.pop(str(index))),
          seconds=time.time() - self.host.started.pop(str(index)),
          tokens=self.host.tokens.pop(str(index)),
      )
      self.running.discard(slot)
      if result.status == str(Status.FAILED):  # its adapter at the start: the base model
        seed = slot_ops.take_slot(self.slots.seed, slot, self.mesh)
        own = job.hyper.of(self.ttt_config)
        adapter = jax.device_get(ttt_step.init_adapter(seed, self.statics['model_config'], own))
      else:  # cut to the job's own rank
        adapter = with_rank(slot_ops.take_slot(self.slots.lora, slot, self.mesh), job.hyper.rank)
      self._finish(result, adapter)
      self._refill(slot)

  def _step_scalars(self, m: dict) -> dict:
    now, trained = time.perf_counter(), m['trained']
    seconds, self._last_collect = now - self._last_collect, now
    mean = lambda x: float(np.mean(x[trained])) if trained.any() else None
    return {
        'loss': mean(m['loss']),
        'lr': mean(m['lr']),
        'grad_norm': mean(m['grad_norm']),
        'running_slots': int(np.sum(m['status'] == Status.RUNNING) + np.sum(m['finished'])),
        'tokens_per_s': float(np.sum(m['tokens'][trained])) / max(seconds, 1e-9),
    }


def train_stream(
    base_params: Any,
    jobs: Sequence[Job],
    task_data: Callable[[int], TTTArrays],
    *,
    checkpointer=None,
    stop_after_steps: int | None = None,
    **options,
) -> list[JobResult]:
  """`Scheduler(base_params, jobs, task_data, **options).run(checkpointer, stop_after_steps)`."""
  scheduler = Scheduler(base_params, jobs, task_data, **options)
  return scheduler.run(checkpointer, stop_after_steps)
