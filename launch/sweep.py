r"""Runs a sweep: a table of experiment arms, here or as a SLURM job array (docs/SWEEPS.md).

  python -m launch.sweep --sweep=configs/sweeps/smoke.py --workdir=runs/smoke
  python -m launch.sweep --sweep=configs/sweeps/laptop.py --workdir=runs/laptop --parallel=2
  python -m launch.sweep --sweep=... --workdir=... --arms=baseline,lr=0.003
  python -m launch.sweep --sweep=... --workdir=... --report        # only the table
  python -m launch.sweep --sweep=... --workdir=... --executor=slurm --dry_run

Each arm runs in WORKDIR/<arm>/ (a rerun skips finished arms and resumes the
others); WORKDIR/table.{md,json,png} is written after every finished arm.
`--arm_index=I` runs arm I in this process: what each worker and array task runs.
"""

from absl import app, flags

from ttt_jax import errors, knobs
from ttt_jax.sweep import run

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file, PATH[:ARG].', required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'One folder per arm.', required=True)
_ARMS = flags.DEFINE_list('arms', [], 'Run only these arms (default: all).')
_REPORT = flags.DEFINE_bool('report', False, 'Only write and print the table.')
_EXECUTOR = flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where arms run.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'local: arms at a time (cores split evenly).')
_GPUS_PER_ARM = flags.DEFINE_integer('gpus_per_arm', 0, 'local: GPUs of each arm.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'slurm: write the sbatch files, submit nothing.')
_MAX_PARALLEL = flags.DEFINE_integer('max_parallel', 0, 'slurm: array tasks at a time (0: any).')
_ARM_INDEX = flags.DEFINE_integer('arm_index', None, 'Run this one arm here (a worker).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  with errors.as_usage_errors():
    if _ARM_INDEX.value is not None:
      knobs.apply_xla_flags()  # before anything touches a device
      knobs.apply_compilation_cache()
      run.run_worker(_SWEEP.value, _WORKDIR.value, _ARM_INDEX.value)
    elif _REPORT.value:
      print(run.report(_SWEEP.value, _WORKDIR.value))
    elif _EXECUTOR.value == 'slurm':
      run.run_slurm(_SWEEP.value, _WORKDIR.value, _ARMS.value, _DRY_RUN.value, _MAX_PARALLEL.value)
    else:
      run.run_local(_SWEEP.value, _WORKDIR.value, _ARMS.value, _PARALLEL.value, _GPUS_PER_ARM.value)


if __name__ == '__main__':
  app.run(main)
