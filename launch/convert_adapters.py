r"""The paper's per-task TTT adapters (adapter_model.bin) -> our PEFT layout.

  python -m launch.convert_adapters --src=/dl/marc-lora-adapters-8B-finetuned-llama3 \
      --dst=/runs/marc8b/adapters --model_dir=/dl/marc-8B-finetuned-llama3
  python -m launch.predict --config=configs/reproduce/marc_8b.py --output_dir=/runs/marc8b/pred \
      --config.model.checkpoint_dir=/dl/marc-8B-finetuned-llama3 \
      --config.adapters_dir=/runs/marc8b/adapters

Needs torch to read the pickles: pip install 'ttt_jax[convert]'.
"""

import json
import os

from absl import app, flags

from ttt_jax import adapter_convert, errors
from ttt_jax.model.config import ModelConfig

_SRC = flags.DEFINE_string('src', None, 'Folder of <task_id>/adapter_model.bin', required=True)
_DST = flags.DEFINE_string('dst', None, 'Output folder of <task_id>/ PEFT adapters.', required=True)
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'The base checkpoint (its config.json gives the shapes).', required=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  with errors.as_usage_errors():
    with errors.blame('model_dir'):
      with open(os.path.join(_MODEL_DIR.value, 'config.json')) as f:
        model_config = ModelConfig.from_hf(json.load(f))
    with errors.blame('src'):
      if not os.path.isdir(_SRC.value):
        raise FileNotFoundError(f'{_SRC.value} is not a directory')
    done, failed = adapter_convert.convert_folder(_SRC.value, _DST.value, model_config)
  print(f'converted {len(done)} adapters into {_DST.value}; {len(failed)} failed')
  for task_id, error in failed.items():
    print(f'  {task_id}: {error}')


if __name__ == '__main__':
  app.run(main)
