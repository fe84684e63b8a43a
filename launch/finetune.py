"""Stage-1 fine-tuning (full or LoRA) of the base model on ARC training tasks.

  python -m launch.finetune --config=configs/finetune.py --workdir=/runs/ft_small
  python -m launch.finetune --config=configs/finetune.py:runlocal --workdir=/tmp/ft_local \
      --config.steps=50

Outputs: workdir/metrics.jsonl, workdir/checkpoints/ (a rerun with the same
workdir resumes), workdir/hf/ (HF safetensors, for TTT's model.checkpoint_dir).
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax.train.finetune import train

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/finetune.py',
                                          'Fine-tuning config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output and checkpoint directory.',
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
