"""What `launch.sweep` does in each of its modes: a worker, the local executor, SLURM, the table."""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

from ttt_jax import knobs
from ttt_jax.eval import metrics
from ttt_jax.sweep import arm as arm_lib
from ttt_jax.sweep import local, slurm, spec, table

# The tuning flags a worker inherits from the command that started the sweep.
_KNOB_FLAGS = ('remat', 'compute_dtype', 'xla_flags', 'hlo_dump_dir', 'compilation_cache_dir')


def knob_flags() -> list[str]:
  """The knobs (ttt_jax/knobs.py) given on this command line, as flags for a worker."""
  return [f'--{n}={flags.FLAGS[n].value}' for n in _KNOB_FLAGS if flags.FLAGS[n].present]


def _selected(sweep: spec.Sweep, names: Sequence[str]) -> list[spec.Arm]:
  return [sweep.arm(n) for n in names] if names else list(sweep.arms)


def report(sweep_file: str, workdir: str) -> str:
  """Writes and returns the table of the arms finished so far."""
  return table.write_table(workdir, spec.load_sweep(sweep_file), metrics.known_levels())


def run_worker(sweep_file: str, workdir: str, index: int) -> None:
  """Runs arm `index` in this process (a local worker or a SLURM array task)."""
  sweep = spec.load_sweep(sweep_file)
  if not 0 <= index < len(sweep.arms):
    raise ValueError(f'--arm_index={index}: the sweep has arms 0..{len(sweep.arms) - 1}')
  arm = sweep.arms[index]
  adjust = []
  if int(os.environ.get('SLURM_NNODES', '1')) > 1:  # jax.distributed reads SLURM's environment
    adjust.append(('ttt.run.distributed', True))

  def prepare(config):
    for key, value in adjust:
      spec.set_override(config, key, value, f'arm {arm.name}')
    knobs.override_model(config.ttt.model)
    knobs.override_model(config.predict.model)

  arm_lib.run_arm(sweep, arm, workdir, prepare)


def run_local(sweep_file: str, workdir: str, names, parallel: int, gpus_per_arm: int) -> None:
  """Every selected unfinished arm, `parallel` at a time; the table after each one."""
  sweep = spec.load_sweep(sweep_file)
  arms = _selected(sweep, names)
  levels = metrics.known_levels()
  write = lambda: table.write_table(workdir, sweep, levels)
  codes = local.run_local(
      sweep, sweep_file, workdir, arms, parallel, gpus_per_arm, knob_flags(), on_finished=write
  )
  print(write())
  failed = sorted(name for name, code in codes.items() if code)
  if failed:
    raise SystemExit(f'arms failed: {", ".join(failed)} (their log.txt says why)')


def run_slurm(sweep_file: str, workdir: str, names, dry_run: bool, max_parallel: int) -> None:
  """Writes the sbatch file(s) of the selected unfinished arms and submits them."""
  sweep = spec.load_sweep(sweep_file)
  arms = [a for a in _selected(sweep, names) if arm_lib.result_of(workdir, a) is None]
  if not arms:
    print('Every selected arm has finished; nothing to submit.')
    return
  paths = slurm.write_scripts(sweep, sweep_file, workdir, arms, knob_flags(), max_parallel)
  for path in paths:
    print(f'wrote {path}')
  if not dry_run:
    for line in slurm.submit(paths):
      print(line)
