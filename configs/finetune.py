"""Stage-1 fine-tuning: the built-in model from scratch on generated tasks + ARC-AGI-1 training.

  python -m launch.finetune --config=configs/finetune.py --workdir=/tmp/ft_small
  python -m launch.finetune --config=configs/finetune.py:runlocal --workdir=/tmp/ft_local

The default is the built-in model's recipe (docs/BUILTIN_MODEL.md), sized for
~60 minutes on a 2-core CPU: grid positions, sequences <= 512 tokens, our task
generators' training split beside ARC-AGI-1 training. `runlocal` shrinks it
for tests: the tiny model, 24 tasks, short sequences, a few steps. From an HF checkpoint: --config.model.checkpoint_dir=DIR
(and a smaller lr, e.g. --config.optim.lr=1e-5); LoRA: --config.lora.enabled=True.
`gpu`: the default recipe with bf16 matmuls on float32 weights (configs/gpu.py).
Every block starts from its dataclass's defaults and overrides what this recipe changes.
"""

from ml_collections import config_dict

from configs import gpu

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.data.pretrain_data import PretrainDataConfig
from ttt_jax.model.builtin import ModelSpec
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train.finetune import OptimConfig, TrainingTasks


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal', 'gpu'):
    raise ValueError(f"configs/finetune.py: unknown argument {arg!r}; use '', 'runlocal' or 'gpu'")
  c = config_dict.ConfigDict()
  c.seed = 0
  c.steps = 20 if runlocal else 3000  # ~1 s/step for 'tiny' at 16 x <= 512 tokens
  c.log_every = 1 if runlocal else 20
  c.eval_every = 10 if runlocal else 500
  c.checkpoint_every = 10 if runlocal else 200

  # From scratch ('' = init_params of the preset). 'tiny' (~1M params): ~3,900 tokens/s at
  # <= 512 tokens on the 2-core CPU; 'small' (~5M) is several times slower. Grid positions
  # (ttt_jax/formats/positions.py) reach a loss in fewer steps; the export records them.
  c.model = to_config_dict(ModelSpec(checkpoint_dir='', positions='grid'))
  if arg == 'gpu':  # bf16 matmuls, float32 weights: stage 1 trains them (configs/gpu.py)
    gpu.apply(c.model, trains_weights=True)

  # Full fine-tuning unless lora.enabled (ttt_jax.model.lora.LoraConfig).
  c.lora = to_config_dict(LoraConfig())
  c.lora.enabled = False

  # Training tasks (TrainingTasks: selectors, see ttt_jax/data/arc.py; the contamination
  # guard drops any training task sharing a pair with the evaluation set) and the stream
  # (ttt_jax.data.pretrain_data.PretrainDataConfig), in one block.
  # 20,000 generated tasks (ttt_jax/data/generators.py, training split: 27 variants of 8
  # families; the held-out split and the gravity family never) and ARC-AGI-1 training.
  c.data = to_config_dict(TrainingTasks(train=('gen:train@slice=0:20000', 'arc1/train')))
  c.data.update(to_config_dict(PretrainDataConfig(max_len=512, batch_size=16, train_only_prob=0.1)))
  c.data.val_max_examples = 32
  c.data.seed = c.get_ref('seed')
  if runlocal:
    c.data.train, c.data.val_frac, c.data.val_max_examples = ('arc1/train@slice=0:24',), 0.2, 4
    c.data.max_len, c.data.batch_size, c.data.bucket_steps, c.data.pad_multiple = 512, 4, 4, 128

  c.optim = to_config_dict(OptimConfig(warmup_steps=50))  # ttt_jax.train.finetune.OptimConfig
  if runlocal:
    c.optim.warmup_steps = 2
  return c
