"""Test-time training: one LoRA adapter per task, T tasks trained together.

  python -m launch.ttt --config=configs/ttt.py:runlocal --workdir=/tmp/ttt_local
  python -m launch.ttt --config=configs/ttt.py --workdir=/runs/ttt1 \
      --config.model.checkpoint_dir=/ckpt/base --config.data.selector=arc1/eval \
      --config.run.lrs='(1e-4, 5e-5)'
  python -m launch.ttt ... --config.run.ranks='(8, 16)' --config.run.alphas='(16.0, 32.0)'
  python -m launch.ttt ... --remat=dots --profile_dir=/tmp/prof --profile_steps=5

Outputs: workdir/adapters/<task_id>/ (PEFT; <task_id>/<knobs>/ in a sweep, e.g.
lr_0.0001 or alpha_16-rank_8), workdir/ttt_metrics.jsonl,
workdir/checkpoints/len_<S>/ (a rerun with the same workdir resumes). See docs/TTT.md;
the tuning flags (ttt_jax/knobs.py) are in docs/PERFORMANCE.md.
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs
from ttt_jax.train import ttt, ttt_step

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/ttt.py', 'TTT config file.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output and checkpoint directory.', required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  config = _CONFIG.value
  knobs.override_model(config.model)
  with errors.as_usage_errors(), knobs.profiled_step(ttt_step):
    ttt.run_ttt(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
