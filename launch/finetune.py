"""Stage-1 fine-tuning (full or LoRA) of the base model on ARC training tasks.

  python -m launch.finetune --config=configs/finetune.py --workdir=/runs/ft_small
  python -m launch.finetune --config=configs/finetune.py:runlocal --workdir=/tmp/ft_local \
      --config.steps=50
  python -m launch.finetune ... --compute_dtype=bfloat16 --xla_flags='--xla_gpu_...'

Outputs: workdir/metrics.jsonl, workdir/checkpoints/ (a rerun with the same
workdir resumes), workdir/hf/ (HF safetensors, for TTT's model.checkpoint_dir).
The tuning flags (ttt_jax/knobs.py) are in docs/PERFORMANCE.md.
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs
from ttt_jax.train import finetune

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/finetune.py', 'Fine-tuning config file.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output and checkpoint directory.', required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  config = _CONFIG.value
  knobs.override_model(config.model)
  with errors.as_usage_errors(), knobs.profiled_step(finetune):
    finetune.train(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
