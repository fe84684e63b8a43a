"""Augmented inference (stage 3): prompt variants, batched decoding, voting.

  python -m launch.predict --config=configs/predict.py --output_dir=/runs/ttt1/predict \
      --config.model.checkpoint_dir=/ckpt/base --config.adapters_dir=/runs/ttt1/adapters
  python -m launch.predict --config=configs/predict.py:runlocal --output_dir=/tmp/predict_local

`runlocal` shrinks the same recipe for a laptop CPU: 2 tasks, few variants,
greedy decoding, the built-in model unless a checkpoint_dir is given.
"""

from ml_collections import config_dict

from ttt_jax.infer import decode, prompts


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal'):
    raise ValueError(f"configs/predict.py: unknown argument {arg!r}; use '' or 'runlocal'")
  c = config_dict.ConfigDict()
  c.selector = (
      'arc1/eval@slice=0:2'
      if runlocal
      else 'arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt'
  )
  # 'builtin' (shipped), an HF checkpoint dir (vocab shrunk to the 16 ARC tokens), or '': a
  # random-init preset.
  c.model = config_dict.ConfigDict(
      dict(
          checkpoint_dir='builtin',
          preset='tiny',
          init_seed=0,
          param_dtype='float32',
          compute_dtype='float32' if runlocal else 'bfloat16',
          remat='none',
      )
  )
  # TTT adapters: adapters_dir/<task_id>[/adapter_subdir]/ (PEFT); empty = the base model.
  c.adapters_dir = ''
  c.adapter_subdir = ''
  # Prompt variants (ttt_jax.infer.prompts.PromptConfig): the paper's transforms and orders.
  c.prompts = config_dict.ConfigDict(
      dict(
          d8=(0, 4) if runlocal else prompts.PAPER_D8,
          color_perms=0,
          orders=1 if runlocal else 2,
          leave_out=0,
          max_variants=4 if runlocal else 64,
          max_len=8192,
      )
  )
  # Decoding: 'greedy' (the paper), 'sample', or 'dfs' (the ARChitects, threshold p).
  c.decoding = 'greedy'
  c.temperature = 1.0
  c.dfs_threshold = 0.1
  c.max_new_tokens = 64 if runlocal else decode.MAX_GRID_TOKENS
  c.batch_size = 8 if runlocal else 64
  c.tasks_per_group = 2 if runlocal else 8
  c.length_multiple = 64 if runlocal else 256
  # Product-of-experts re-scoring over N augmentations (0 = off); voting (vote.VoteConfig).
  c.score_augmentations = 0
  c.vote = config_dict.ConfigDict(dict(method='hierarchical', rank_mode='votes', group_top_k=3))
  c.seed = 0
  return c
