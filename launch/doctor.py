"""Is this machine ready for a TTT recipe: backend, devices, versions against our pins, the
attention kernels it takes and why, the compilation cache, the recipe's memory plan.

  python -m launch.doctor                                      # configs/ttt.py, built-in model
  python -m launch.doctor --config=configs/ttt.py:gpu --preset=llama3.2-1b
  python -m launch.doctor --config=configs/ttt.py:gpu --preset=llama3.1-8b \
      --config.data.pack=True --config.run.num_slots=4

Prints one line per finding and one per mismatch (WARNING / FATAL); exit status 0 when the
recipe can run here (ttt_jax/doctor.py; README "On a GPU or TPU").
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/ttt.py', 'The TTT recipe to check.', lock_config=True
)
_PRESET = flags.DEFINE_string(
    'preset', '', "A model preset's shape (e.g. llama3.2-1b) instead of the recipe's checkpoint."
)
_PLAN = flags.DEFINE_bool('plan', True, "Compile the recipe's step for its memory plan.")
_PROBE = flags.DEFINE_bool('probe', True, 'Run each attention kernel once (forward + backward).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  from ttt_jax import doctor  # pylint: disable=import-outside-toplevel
  from ttt_jax.train import ttt  # pylint: disable=import-outside-toplevel

  config = _CONFIG.value
  knobs.override_model(config.model)
  with errors.as_usage_errors():
    run = ttt.TTTRun.from_config(config)
  findings = doctor.diagnose(
      run,
      preset=_PRESET.value,
      cache_dir=knobs.COMPILATION_CACHE_DIR.value,
      plan=_PLAN.value,
      probe=_PROBE.value,
  )
  print(doctor.report(findings), end='')
  sys.exit(0 if doctor.usable(findings) else 1)


if __name__ == '__main__':
  app.run(main)
