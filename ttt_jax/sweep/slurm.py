"""A sweep as SLURM job arrays: one array task per arm, arms grouped by the resources they ask.

WORKDIR/sweep.sbatch (or sweep_<k>.sbatch, one per distinct Resources) is a plain
bash script: SLURM runs it once per array index, and so can a user, locally, with
SLURM_ARRAY_TASK_ID set (that is how it is tested). Array index i runs arm
ARMS[i] with `launch.sweep --arm_index`; a multi-node arm starts one process per
node with srun; there the worker sets `ttt.run.distributed=True`, and each process
joins jax.distributed from SLURM's environment (JAX's SLURM cluster detection gives
the coordinator, process count and id) for the TTT stage.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence

from ttt_jax.sweep import local, spec


def _groups(sweep: spec.Sweep, arms: Sequence[spec.Arm]) -> list[tuple[spec.Resources, list[int]]]:
  """Arm indices (into sweep.arms) grouped by their resources, in sweep order."""
  index = {a.name: i for i, a in enumerate(sweep.arms)}
  groups: dict[spec.Resources, list[int]] = {}
  for a in arms:
    groups.setdefault(sweep.resources_of(a), []).append(index[a.name])
  return list(groups.items())


def script(
    sweep_file: str,
    workdir: str,
    resources: spec.Resources,
    indices: Sequence[int],
    name: str,
    flags: Sequence[str] = (),
    max_parallel: int = 0,
) -> str:
  """The sbatch script of one array over the arms `indices`."""
  r = resources
  array = f'0-{len(indices) - 1}' + (f'%{max_parallel}' if max_parallel else '')
  head = [
      '#!/bin/bash',
      f'#SBATCH --job-name={name}',
      f'#SBATCH --array={array}',
      f'#SBATCH --nodes={r.nodes}',
      '#SBATCH --ntasks-per-node=1',
      f'#SBATCH --time={r.time}',
      f'#SBATCH --output={os.path.join(workdir, "slurm-%A_%a.out")}',
  ]
  if r.gpus_per_node:
    head.append(f'#SBATCH --gpus-per-node={r.gpus_per_node}')
  if r.cpus_per_task:
    head.append(f'#SBATCH --cpus-per-task={r.cpus_per_task}')
  if r.partition:
    head.append(f'#SBATCH --partition={r.partition}')
  # Shell expressions, left unquoted: the arm of this array index, and the job's
  # interpreter ($PYTHON, else python on PATH; not this machine's path).
  index, python = '"${ARMS[$SLURM_ARRAY_TASK_ID]}"', '"${PYTHON:-python}"'
  command = local.worker_command(sweep_file, workdir, index, flags, python)
  launcher = 'srun ' if r.nodes > 1 else ''
  body = [
      'set -euo pipefail',
      f'cd {shlex.quote(os.getcwd())}',
      f'ARMS=({" ".join(map(str, indices))})',
      launcher + ' '.join(c if '$' in c else shlex.quote(c) for c in command),
  ]
  return '\n'.join(head + [''] + body) + '\n'


def write_scripts(
    sweep: spec.Sweep,
    sweep_file: str,
    workdir: str,
    arms: Sequence[spec.Arm],
    flags: Sequence[str] = (),
    max_parallel: int = 0,
) -> list[str]:
  """Writes one sbatch file per group of arms with equal resources; returns their paths."""
  groups = _groups(sweep, arms)
  stem = os.path.basename(sweep_file).removesuffix('.py').split(':')[0]
  paths = []
  for k, (resources, indices) in enumerate(groups):
    path = os.path.join(workdir, 'sweep.sbatch' if len(groups) == 1 else f'sweep_{k}.sbatch')
    text = script(sweep_file, workdir, resources, indices, f'sweep-{stem}', flags, max_parallel)
    os.makedirs(workdir, exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
    paths.append(path)
  return paths


def submit(paths: Sequence[str]) -> list[str]:
  """`sbatch` each script; returns what sbatch printed (the job ids)."""
  return [
      subprocess.run(['sbatch', p], capture_output=True, text=True, check=True).stdout.strip()
      for p in paths
  ]
