"""Stage-1 fine-tuning: the built-in model from scratch on ARC-AGI-1 training tasks.

  python -m launch.finetune --config=configs/finetune.py --workdir=/tmp/ft_small
  python -m launch.finetune --config=configs/finetune.py:runlocal --workdir=/tmp/ft_local

The default is the built-in model's recipe, sized for ~60 minutes on a 2-core
CPU. `runlocal` shrinks it for tests: the tiny model, 24 tasks, short
sequences, a few steps. From an HF checkpoint: --config.model.checkpoint_dir=DIR
(and a smaller lr, e.g. --config.optim.lr=1e-5); LoRA: --config.lora.enabled=True.
"""

from ml_collections import config_dict


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal'):
    raise ValueError(f"configs/finetune.py: unknown argument {arg!r}; use '' or 'runlocal'")
  c = config_dict.ConfigDict()
  c.seed = 0
  c.steps = 20 if runlocal else 300  # ~10-12 s/step measured for 'tiny': ~60 min
  c.log_every = 1 if runlocal else 10
  c.eval_every = 10 if runlocal else 100
  c.checkpoint_every = 10 if runlocal else 50

  # Empty checkpoint_dir: init_params of the preset (from scratch).
  c.model = config_dict.ConfigDict(
      dict(
          # 'tiny' (~1M params): 627 tokens/s at seq 2048 on the 2-core CPU; 'small' (~5M)
          # is several times slower, too few steps in an hour.
          checkpoint_dir='',
          preset='tiny',
          init_seed=0,
          param_dtype='float32',
          compute_dtype='float32',
          remat='none' if runlocal else 'full',
      )
  )

  c.lora = config_dict.ConfigDict(
      dict(
          enabled=False,
          rank=8,
          alpha=16.0,
          targets=('q', 'v', 'o', 'gate', 'up', 'down'),
          rslora=False,
      )
  )

  # Training tasks (selectors, see ttt_jax/data/arc.py); the contamination guard
  # drops any training task sharing a pair with the evaluation set.
  c.data = config_dict.ConfigDict(
      dict(
          train=('arc1/train@slice=0:24',) if runlocal else ('arc1/train',),
          contamination_guard='arc1/eval',
          val_frac=0.2 if runlocal else 0.05,
          val_max_examples=4 if runlocal else 8,
          max_len=512 if runlocal else 2048,
          batch_size=4 if runlocal else 8,
          loss='all_but_first',
          min_demos=1,
          d8=True,
          colors=True,
          shuffle_order=True,
          variant_prob=0.3,
          train_only_prob=0.1,
          bucket_steps=4 if runlocal else 16,
          pad_multiple=128 if runlocal else 256,
      )
  )

  c.optim = config_dict.ConfigDict(
      dict(
          lr=1e-3,
          warmup_steps=2 if runlocal else 20,
          end_lr_frac=0.1,
          weight_decay=0.01,
          clip_norm=1.0,
          b1=0.9,
          b2=0.95,
          eps=1e-8,
      )
  )
  return c
