"""The local executor: N arms at a time, each a worker process with its share of the machine.

A worker is exactly the command a SLURM array task runs (`launch.sweep
--arm_index=I`), so an arm runs the same way here and on a cluster. Each gets
its own CPU cores (its affinity: XLA:CPU sizes its thread pool from it) and,
with `gpus_per_arm`, its own CUDA_VISIBLE_DEVICES slice; its output goes to
WORKDIR/<arm>/log.txt. The executor prints a line when an arm starts, changes
stage, finishes or fails, and calls `on_finished` after each arm (the table).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from ttt_jax import checkpoint
from ttt_jax.sweep import arm as arm_lib
from ttt_jax.sweep import spec

LOG_FILE = 'log.txt'


def worker_command(
    sweep_file: str, workdir: str, index, flags: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
  """The command that runs arm `index` of the sweep (what each array task runs)."""
  return [
      python,
      '-m',
      'launch.sweep',
      f'--sweep={sweep_file}',
      f'--workdir={workdir}',
      f'--arm_index={index}',
      *flags,
  ]


def split_evenly(items: Sequence, parts: int) -> list[tuple]:
  """`items` cut into `parts` contiguous runs whose sizes differ by at most one."""
  size, extra = divmod(len(items), parts)
  cuts = [i * size + min(i, extra) for i in range(parts + 1)]
  return [tuple(items[cuts[i] : cuts[i + 1]]) for i in range(parts)]


def visible_gpus() -> list[str]:
  """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
  if os.environ.get('CUDA_VISIBLE_DEVICES'):
    return os.environ['CUDA_VISIBLE_DEVICES'].split(',')
  try:
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return []
  return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith('GPU')]


@dataclasses.dataclass
class _Running:
  arm: spec.Arm
  process: subprocess.Popen
  share: int
  started: float
  stages_said: int  # progress lines already printed (a rerun's file holds earlier ones)


def _shares(parallel: int, gpus_per_arm: int) -> list[dict]:
  """Each concurrent worker's CPU set and (optionally) GPUs."""
  cpus = sorted(os.sched_getaffinity(0))
  if parallel > len(cpus):
    raise ValueError(f'--parallel={parallel}: this machine gives this process {len(cpus)} cores')
  shares = [{'cpus': c} for c in split_evenly(cpus, parallel)]
  if gpus_per_arm:
    gpus = visible_gpus()
    if len(gpus) < parallel * gpus_per_arm:
      raise ValueError(
          f'--parallel={parallel} x --gpus_per_arm={gpus_per_arm} needs '
          f'{parallel * gpus_per_arm} GPUs, {len(gpus)} visible'
      )
    for i, share in enumerate(shares):
      share['gpus'] = gpus[i * gpus_per_arm : (i + 1) * gpus_per_arm]
  return shares


def _describe(share: dict) -> str:
  cpus = share['cpus']
  text = f'cores {cpus[0]}-{cpus[-1]}' if len(cpus) > 1 else f'core {cpus[0]}'
  return text + (f', GPUs {",".join(share["gpus"])}' if share.get('gpus') else '')


def _start(arm, workdir, command, share) -> subprocess.Popen:
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  if 'gpus' in share:
    env['CUDA_VISIBLE_DEVICES'] = ','.join(share['gpus'])
  os.makedirs(arm_lib.arm_dir(workdir, arm), exist_ok=True)
  log = open(os.path.join(arm_lib.arm_dir(workdir, arm), LOG_FILE), 'a')
  cpus = share['cpus']
  with log:
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )


def _last_line(path: str) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - 4096))
      lines = [l for l in f.read().decode(errors='replace').splitlines() if l.strip()]
  except OSError:
    return ''
  return lines[-1] if lines else ''


def run_local(
    sweep: spec.Sweep,
    sweep_file: str,
    workdir: str,
    arms: Sequence[spec.Arm],
    parallel: int = 1,
    gpus_per_arm: int = 0,
    flags: Sequence[str] = (),
    on_finished: Callable[[], None] = lambda: None,
    poll_s: float = 2.0,
    say: Callable[[str], None] = print,
) -> dict[str, int]:
  """Runs the unfinished `arms`, `parallel` at a time; returns each one's exit status."""
  index = {a.name: i for i, a in enumerate(sweep.arms)}
  pending = [a for a in arms if arm_lib.result_of(workdir, a) is None]
  for a in arms:
    if a not in pending:
      say(f'[{a.name}] finished earlier: skipped')
  shares = _shares(parallel, gpus_per_arm)
  free, running, codes = list(range(len(shares))), [], {}
  while pending or running:
    while pending and free:
      a, share = pending.pop(0), free.pop(0)
      command = worker_command(sweep_file, workdir, index[a.name], flags)
      process = _start(a, workdir, command, shares[share])
      said = len(
          checkpoint.read_log(os.path.join(arm_lib.arm_dir(workdir, a), arm_lib.PROGRESS_FILE))
      )
      running.append(_Running(a, process, share, time.time(), said))
      say(f'[{a.name}] started ({_describe(shares[share])})')
    time.sleep(poll_s)
    for r in list(running):
      directory = arm_lib.arm_dir(workdir, r.arm)
      progress = checkpoint.read_log(os.path.join(directory, arm_lib.PROGRESS_FILE))
      for entry in progress[r.stages_said :]:
        say(f'[{r.arm.name}] {entry["stage"]} ({entry["at"] - r.started:.0f} s)')
      r.stages_said = max(r.stages_said, len(progress))
      code = r.process.poll()
      if code is None:
        continue
      running.remove(r)
      free.append(r.share)
      codes[r.arm.name] = code
      minutes = (time.time() - r.started) / 60
      if code == 0:
        say(f'[{r.arm.name}] done in {minutes:.1f} min')
      else:
        last = _last_line(os.path.join(directory, LOG_FILE))
        say(f'[{r.arm.name}] FAILED (exit {code}) after {minutes:.1f} min: {last}')
      on_finished()
  return codes
