"""Stage 2, a whole run from a config (what launch/ttt.py calls): test-time training
of one LoRA adapter per selected task (x every combination of an in-step sweep's knobs).

The pieces: the recipe (ttt_config.py), the loss (loss.py), the vmapped step
(ttt_step.py), slot operations (slots.py) and the job scheduler (scheduler.py).
This file only wires a configs/ttt.py ConfigDict to them: it loads the model
and tasks, builds each task's examples, names the jobs, and writes adapters,
ttt_metrics.jsonl and TensorBoard scalars as jobs finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import zlib
from collections.abc import Callable, Sequence

import jax
from absl import logging
from tqdm import tqdm

from ttt_jax import checkpoint, parallel
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.data import arc, ttt_data
from ttt_jax.data.ttt_data import TTTArrays, TTTDataConfig
from ttt_jax.errors import UserError, blame
from ttt_jax.metric_writer import MetricWriter
from ttt_jax.model import builtin
from ttt_jax.run_lock import RunLock
from ttt_jax.train import hyper, shared
from ttt_jax.train.hyper import Hyper
from ttt_jax.train.scheduler import Job, JobResult, train_stream
from ttt_jax.train.ttt_config import TTTConfig

METRICS_FILE = 'ttt_metrics.jsonl'
# RunConfig's in-step sweep axes -> the Hyper field each sweeps.
SWEEP_AXES = {
    'lrs': 'lr',
    'alphas': 'alpha',
    'ranks': 'rank',
    'weight_decays': 'weight_decay',
    'warmup_fracs': 'warmup_frac',
    'step_caps': 'max_steps',
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How a TTT run is laid out: the `run` block of configs/ttt.py."""

  num_slots: int = 8  # tasks trained together in one vmapped step
  # An in-step sweep (train/hyper.py): a job per task x every combination of these axes'
  # values, trained side by side in the same step; (): the TTTConfig value. Ranks are
  # masked to the largest (every slot is sized, and costs, as that one).
  lrs: tuple[float, ...] = ()
  alphas: tuple[float, ...] = ()
  ranks: tuple[int, ...] = ()
  weight_decays: tuple[float, ...] = ()
  warmup_fracs: tuple[float, ...] = ()
  step_caps: tuple[int | None, ...] = ()  # TTTConfig.max_steps per job
  # The paper's "Shared TTT" arm: one adapter on the pooled data of every task
  # (train/shared.py), for shared_steps 'summed' (the per-task budgets added up) or
  # 'one_task' (the largest of them).
  shared_adapter: bool = False
  shared_steps: str = 'summed'
  checkpoint_every: int = 50  # global steps between resumable checkpoints (0: none)
  mesh: tuple[tuple[str, int], ...] = parallel.DEFAULT_AXES
  # Multi-host start-up; empty / None fields are auto-detected by jax.distributed.initialize.
  distributed: bool = False
  coordinator_address: str = ''
  num_processes: int | None = None
  process_id: int | None = None

  def __post_init__(self):
    if self.num_slots < 1 or self.checkpoint_every < 0:
      raise ValueError(
          f'RunConfig.num_slots ({self.num_slots}) must be >= 1 and checkpoint_every '
          f'({self.checkpoint_every}) >= 0'
      )
    if self.shared_steps not in shared.BUDGETS:
      raise ValueError(f'RunConfig.shared_steps must be one of {shared.BUDGETS}')
    if self.shared_adapter and self.step_caps:
      raise ValueError(
          'RunConfig.step_caps cannot sweep a shared adapter (run.shared_adapter=True): its '
          'steps are the run.shared_steps budget'
      )

  def hypers(self, ttt_config: TTTConfig) -> dict[str, Hyper]:
    """{adapter sub-directory name: Hyper} of the sweep's combinations (hyper.grid: ''
    when there is one); a bad axis value raises a UserError naming its flag."""
    axes = {field: getattr(self, axis) for axis, field in SWEEP_AXES.items()}
    for axis, field in SWEEP_AXES.items():
      with blame(f'config.run.{axis}'):
        hyper.grid(ttt_config, {field: axes[field]})
    return hyper.grid(ttt_config, axes)


@dataclasses.dataclass(frozen=True)
class TTTRun:
  """A configs/ttt.py ConfigDict as frozen dataclasses (errors name the bad flag)."""

  model: builtin.ModelSpec
  data: TTTDataConfig
  selector: str
  ttt: TTTConfig
  run: RunConfig

  @classmethod
  def from_config(cls, config) -> TTTRun:
    return cls(
        model=from_config_dict(builtin.ModelSpec, config.model, where='config.model'),
        data=from_config_dict(
            TTTDataConfig, config.data, where='config.data', exclude=('selector',)
        ),
        selector=config.data.selector,
        ttt=from_config_dict(TTTConfig, config.ttt, where='config.ttt'),
        run=from_config_dict(RunConfig, config.run, where='config.run'),
    )


def task_seed(task_id: str) -> int:
  """A task's random stream (adapter init, data order, augmentations) comes from its id,
  so its adapter does not depend on which other tasks the run selects."""
  return zlib.crc32(task_id.encode()) & 0x7FFFFFFF


def read_finished(
    metrics_path: str, jobs: Sequence[Job], names: Sequence[str]
) -> dict[int, JobResult]:
  """{job index: result} of the jobs an earlier run logged in ttt_metrics.jsonl (their
  adapters were exported before the line was written); they must be this run's jobs,
  knob for knob (`names[task]`: the adapter name of each job's task index)."""
  finished = {}
  for record in checkpoint.read_log(metrics_path):
    if 'hyper' not in record:
      raise ValueError(
          f"{metrics_path}: job {record.get('job')}'s line has no 'hyper' (written by a "
          'version before the in-step sweep); use a fresh workdir'
      )
    result = JobResult.from_record(record)
    index = result.job
    if (
        index >= len(jobs)
        or (jobs[index].task, jobs[index].hyper) != (result.task, result.hyper)
        or record.get('task_id', names[result.task]) != names[result.task]
    ):
      raise ValueError(
          f'{metrics_path}: job {index} (task {result.task}, {result.hyper}) is not a job '
          'of this run (other tasks or sweep knobs, shared or not?); use a fresh workdir'
      )
    finished[index] = result
  return finished


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What a run's jobs train: one adapter per name (a task id, or shared.SHARED_ID), the
  examples of name i as [max_examples, seq_len] arrays (`data(i)`), the recipe and the
  slots they train in."""

  names: tuple[str, ...]
  data: Callable[[int], TTTArrays]
  max_examples: int
  ttt: TTTConfig
  num_slots: int


def _examples(c: TTTRun, task: arc.Task, fmt) -> list[ttt_data.Example]:
  examples, _ = ttt_data.build_ttt_examples(task, c.data, task_seed(task.id) ^ c.ttt.seed, fmt)
  return examples


def _arrays(c: TTTRun, examples, max_examples: int, fmt) -> TTTArrays:
  packed = ttt_data.pack_tasks([examples], max_examples, c.data.seq_len, fmt.pad_id, c.data.pack)
  return jax.tree.map(lambda x: x[0], packed)


def _per_task_plan(c: TTTRun, tasks, fmt, num_hypers: int) -> _Plan:
  @functools.lru_cache(maxsize=2 * num_hypers)
  def task_data(t: int) -> TTTArrays:
    return _arrays(c, _examples(c, tasks[t], fmt), c.data.max_examples, fmt)

  return _Plan(tuple(t.id for t in tasks), task_data, c.data.max_examples, c.ttt, c.run.num_slots)


def _shared_plan(c: TTTRun, tasks, fmt, num_hypers: int, mesh) -> _Plan:
  """One adapter on the pooled examples of every task (train/shared.py), in as few slots
  as the sweep and the mesh allow (each slot holds the whole pool)."""
  per_task = [_examples(c, t, fmt) for t in tasks]
  rows = [
      len(ttt_data.pack_rows([len(t) for t, _ in ex], c.data.seq_len)) if c.data.pack else len(ex)
      for ex in per_task
  ]
  pooled = [e for ex in per_task for e in ex]
  pooled_arrays = _arrays(c, pooled, max(len(pooled), 1), fmt)
  steps = shared.step_budget(rows, c.ttt, c.run.shared_steps)
  recipe = shared.shared_recipe(c.ttt, int(pooled_arrays.num_examples), steps)
  shards = parallel.num_task_shards(dict(mesh.shape))
  logging.info(
      'Shared TTT: one adapter on %d examples of %d tasks, %d steps (%s budget)',
      len(pooled),
      len(tasks),
      steps,
      c.run.shared_steps,
  )
  return _Plan(
      (shared.SHARED_ID,),
      lambda _: pooled_arrays,
      max(len(pooled), 1),
      recipe,
      shards * -(-num_hypers // shards),
  )


def _train_by_row_length(
    params, jobs, plan: _Plan, length_of_task, c, workdir, finished, *, scalars, **options
) -> list[JobResult]:
  """Trains the jobs in groups of one row length, shortest first, each group a stream of
  its own: its own compiled step, checkpoints (checkpoints/len_<S>/) and TensorBoard
  step scalars (ttt_step/len_<S>/). A group whose jobs all finished trains nothing (the
  Scheduler passes them through without resuming its checkpoint).

  Computing the lengths built every task's examples once more (about a second per task
  at the paper's 250 examples)."""
  results = []
  for seq_len in sorted(set(length_of_task.values())):
    schedule = [i for i, job in enumerate(jobs) if length_of_task[job.task] == seq_len]
    checkpointer = None
    if c.run.checkpoint_every:
      checkpointer = checkpoint.RunCheckpointer(
          os.path.join(workdir, 'checkpoints', f'len_{seq_len}'), c.run.checkpoint_every
      )
    results += train_stream(
        params,
        jobs,
        functools.partial(_cut_task_data, plan.data, seq_len),
        ttt_config=plan.ttt,
        num_slots=plan.num_slots,
        max_examples=plan.max_examples,
        seq_len=seq_len,
        packed=c.data.pack,
        on_step=functools.partial(_write_step, scalars, f'ttt_step/len_{seq_len}'),
        checkpointer=checkpointer,
        finished=finished,
        schedule=schedule,
        **options,
    )
  return results


def _cut_task_data(task_data, seq_len: int, t: int) -> TTTArrays:
  return ttt_data.cut_rows(task_data(t), seq_len)


def _write_step(scalars: MetricWriter, prefix: str, step: int, values: dict) -> None:
  scalars.write(step, values, prefix=prefix)


def run_ttt(config, workdir: str) -> list[JobResult]:
  """Test-time training of every selected task (x every combination of the sweep axes).

  Writes workdir/adapters/<task_id>/ (PEFT format; <task_id>/<name>/ in a sweep, the
  name from the swept knobs, e.g. lr_5e-05-rank_16: RunConfig.hypers),
  workdir/ttt_metrics.jsonl (one line per job: its knobs, status, steps, loss curve,
  seconds, tokens), workdir/tensorboard/ and resumable checkpoints
  in workdir/checkpoints/len_<S>/. A rerun in the same workdir trains only the
  jobs not yet in ttt_metrics.jsonl (from the last checkpoint that restores, if
  any). One run per workdir at a time (run_lock.py). With `run.shared_adapter`, one
  adapter for all tasks: adapters/_shared/ and the manifest adapters/shared.json
  (train/shared.py).
  """
  c = TTTRun.from_config(config)
  parallel.initialize_distributed(
      c.run.distributed, c.run.coordinator_address or None, c.run.num_processes, c.run.process_id
  )
  # Process 0 locks the workdir for the whole run: a second run on it is refused.
  with RunLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _run_ttt(c, workdir)


def _run_ttt(c: TTTRun, workdir: str) -> list[JobResult]:
  with blame('config.model.checkpoint_dir'):
    model_config, params, model_dir = builtin.load_base_model(c.model)
  with blame('config.model.format'):
    fmt = builtin.load_format(c.model, model_config)
  mesh = parallel.make_mesh(c.run.mesh)
  params = parallel.shard_params(params, mesh)
  with blame('config.data.selector'):
    tasks, _ = arc.load_tasks(c.selector)  # logs what it loaded and skipped
  if not tasks:
    raise UserError(f'--config.data.selector: {c.selector!r} selected no valid tasks')

  num_hypers = len(c.run.hypers(c.ttt))  # checks the sweep's values
  if c.run.shared_adapter:
    plan = _shared_plan(c, tasks, fmt, num_hypers, mesh)
  else:
    plan = _per_task_plan(c, tasks, fmt, num_hypers)
  hypers = c.run.hypers(plan.ttt)  # a shared plan's recipe has its own step budget
  sub_of = {h: name for name, h in hypers.items()}
  seeds = [task_seed(name) for name in plan.names]
  jobs = [Job(i, h, seeds[i]) for i in range(len(plan.names)) for h in hypers.values()]

  os.makedirs(workdir, exist_ok=True)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  finished = read_finished(metrics_path, jobs, plan.names)
  if finished:
    logging.info(
        'Resuming: %d of %d jobs already finished in %s', len(finished), len(jobs), metrics_path
    )
  writer = jax.process_index() == 0
  logged = set(finished)
  progress = tqdm(total=len(jobs), desc='TTT jobs', disable=not writer)
  scalars = MetricWriter(workdir)
  adapters_dir = os.path.join(workdir, 'adapters')

  def on_job_done(result: JobResult, adapter) -> None:
    progress.update(1)
    if not writer or result.job in logged:
      return
    task_id, sub = plan.names[result.task], sub_of[result.hyper]
    name = f'{task_id}/{sub}' if sub else task_id  # its directory under adapters/
    if adapter is not None:
      checkpoint.export_peft_adapter(
          os.path.join(adapters_dir, name),
          adapter,
          result.hyper.of(plan.ttt).lora,  # its own rank and alpha
          model_config,
          base_model_name_or_path=model_dir,
      )
    checkpoint.append_record(metrics_path, {'task_id': task_id, **dataclasses.asdict(result)})
    for step, loss in enumerate(result.losses):
      scalars.write(step, {'loss': loss}, prefix=f'ttt_task/{name}')
    scalars.write(
        result.job,
        {
            'final_loss': next((l for l in result.losses[::-1] if l), None),
            'steps': result.steps,
            'seconds': result.seconds,
        },
        prefix='ttt_job',
    )
    logged.add(result.job)

  length_of_task = {
      t: ttt_data.row_length(plan.data(t).lengths, c.data.seq_len, c.data.length_bucket)
      for t in range(len(plan.names))
  }
  with scalars:
    results = _train_by_row_length(
        params,
        jobs,
        plan,
        length_of_task,
        c,
        workdir,
        finished,
        model_config=model_config,
        mesh=mesh,
        on_job_done=on_job_done,
        scalars=scalars,
    )
  progress.close()
  if (
      c.run.shared_adapter
      and writer
      and os.path.isdir(os.path.join(adapters_dir, shared.SHARED_ID))
  ):
    shared.write_manifest(
        adapters_dir, [t.id for t in tasks], c.run.shared_steps, plan.ttt.max_steps
    )
  counts = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  logging.info('TTT finished %d jobs: %s; adapters in %s', len(results), counts, adapters_dir)
  return results
