"""The main job on the built-in default: `make demo` (see configs/demo.py).

python -m launch.demo --workdir=runs/demo --config.selector=arc1/eval@slice=0:20
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs
from ttt_jax.demo import run_demo

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/demo.py', 'Demo config file.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Output directory (a rerun resumes).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  config = _CONFIG.value
  knobs.override_model(config.ttt.model)
  knobs.override_model(config.predict.model)
  with errors.as_usage_errors():
    run_demo(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
