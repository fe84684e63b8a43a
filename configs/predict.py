"""Augmented inference (stage 3): prompt variants, batched decoding, voting.

  python -m launch.predict --config=configs/predict.py --output_dir=/runs/ttt1/predict \
      --config.model.checkpoint_dir=/ckpt/base --config.adapters_dir=/runs/ttt1/adapters
  python -m launch.predict --config=configs/predict.py:runlocal --output_dir=/tmp/predict_local

The block starts from ttt_jax.infer.predict.PredictConfig's defaults (prompts:
the paper's transforms and orders; voting: hierarchical) and overrides what
this recipe changes. `runlocal` shrinks it for a laptop CPU: 2 tasks, few
variants, greedy decoding, the built-in model unless a checkpoint_dir is given.
`gpu`: bf16 weights and matmuls (configs/gpu.py).
"""

from ml_collections import config_dict

from configs import gpu

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.infer.predict import PredictConfig
from ttt_jax.model.builtin import ModelSpec


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal', 'gpu'):
    raise ValueError(f"configs/predict.py: unknown argument {arg!r}; use '', 'runlocal' or 'gpu'")
  # Decoding ('greedy', the paper; 'sample'; 'dfs', the ARChitects), batching, product-of-
  # experts re-scoring (score_augmentations, 0 = off), prompts and voting.
  c = to_config_dict(PredictConfig())
  c.prompts.seed = c.get_ref('seed')
  c.selector = 'arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt'
  # 'builtin' (shipped), an HF checkpoint dir (vocab shrunk to the 16 ARC tokens), or '': a
  # random-init preset.
  c.model = to_config_dict(ModelSpec(compute_dtype='bfloat16'))
  if arg == 'gpu':  # bf16 base weights too (configs/gpu.py); the LoRA path, no weight copy
    gpu.apply(c.model)
    c.merge_adapters = False
  # TTT adapters: adapters_dir/<task_id>[/adapter_subdir]/ (PEFT); empty = the base model.
  c.adapters_dir = ''
  c.adapter_subdir = ''
  # True: the base model through zeros of those adapters' shapes (the same logits), so a
  # base-model run compiles what the run with the adapters reuses (the demo's two arms).
  c.zero_adapters = False
  c.batch_size, c.length_multiple = 64, 256
  if runlocal:
    c.selector = 'arc1/eval@slice=0:2'
    c.model.compute_dtype = 'float32'
    c.prompts.d8, c.prompts.orders, c.prompts.max_variants = (0, 4), 1, 4
    c.max_new_tokens, c.batch_size, c.tasks_per_group, c.length_multiple = 64, 8, 2, 64
  return c
