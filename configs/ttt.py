"""Test-time training (stage 2), the paper's recipe.

  python -m launch.ttt --config=configs/ttt.py --workdir=/tmp/ttt \
      --config.model.checkpoint_dir=/ckpt/llama3.2-1b-arc --config.ttt.lr=5e-5
  python -m launch.ttt --config=configs/ttt.py:runlocal --workdir=/tmp/ttt_local

`runlocal` shrinks the same recipe for a laptop CPU: 4 tasks, short
sequences, few examples, a small adapter, a handful of steps.
"""

from ml_collections import config_dict


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal'):
    raise ValueError(f"configs/ttt.py: unknown argument {arg!r}; use '' or 'runlocal'")
  c = config_dict.ConfigDict()

  # Base model: 'builtin' (the shipped stage-1 model, docs/BUILTIN_MODEL.md), an HF-format
  # checkpoint dir (vocab shrunk to the 16 ARC tokens), or '': a random-init preset.
  c.model = config_dict.ConfigDict(
      dict(
          checkpoint_dir='builtin',
          preset='tiny',
          init_seed=0,
          param_dtype='float32',
          compute_dtype='float32' if runlocal else 'bfloat16',
          remat='none' if runlocal else 'full',
      )
  )

  # TTT data per task: leave-one-out x augmentations (ttt_jax/data/ttt_data.py).
  c.data = config_dict.ConfigDict(
      dict(
          selector=(
              'arc1/eval@slice=0:4'
              if runlocal
              else 'arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt'
          ),
          max_examples=16 if runlocal else 250,
          seq_len=1024 if runlocal else 8192,
          augmentations_per_task=4 if runlocal else 64,
          loss='all_but_first',
          leave_two_out=True,
          train_only_prob=0.0,
          # The invertible augmentations; all False = the paper's "no transformation" ablation.
          d8=True,
          colors=True,
          shuffle_order=True,
      )
  )

  # Per-task adapter training (ttt_jax.train.ttt.TTTConfig): the paper's values.
  c.ttt = config_dict.ConfigDict(
      dict(
          rank=8 if runlocal else 128,
          alpha=16.0,
          targets=('q', 'v', 'o', 'gate', 'up', 'down'),
          rslora=False,
          lr=5e-5,
          epochs=1 if runlocal else 2,
          batch_size=2,
          warmup_frac=0.1,
          weight_decay=0.01,
          clip_norm=1.0,
          b1=0.9,
          b2=0.999,
          eps=1e-8,
          max_steps=config_dict.placeholder(int),
          adaptive_stop_loss=config_dict.placeholder(float),
          seed=0,
      )
  )
  if runlocal:
    c.ttt.max_steps = 4

  # The run: slots trained together, an optional lr sweep (every task x every
  # lr, one adapter each), checkpoints, the device mesh, multi-host start-up
  # (empty / None fields are auto-detected by jax.distributed.initialize).
  c.run = config_dict.ConfigDict(
      dict(
          num_slots=4 if runlocal else 8,
          lrs=(),
          checkpoint_every=0 if runlocal else 50,
          mesh=(('data', -1), ('fsdp', 1), ('tensor', 1)),
          distributed=False,
          coordinator_address='',
          num_processes=config_dict.placeholder(int),
          process_id=config_dict.placeholder(int),
      )
  )
  return c
