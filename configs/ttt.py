"""Test-time training (stage 2), the paper's recipe.

  python -m launch.ttt --config=configs/ttt.py --workdir=/tmp/ttt \
      --config.model.checkpoint_dir=/ckpt/llama3.2-1b-arc --config.ttt.lr=5e-5
  python -m launch.ttt --config=configs/ttt.py:runlocal --workdir=/tmp/ttt_local

Every block starts from its dataclass's defaults (the paper's values, written
once there) and overrides only what this recipe changes. `runlocal` shrinks
the same recipe for a laptop CPU: 4 tasks, short sequences, few examples, a
small adapter, a handful of steps. `gpu` is the paper's recipe with bf16 base weights
(float32 adapters, optimizer state and loss: configs/gpu.py).
"""

from ml_collections import config_dict

from configs import gpu

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.data.ttt_data import TTTDataConfig
from ttt_jax.model.builtin import ModelSpec
from ttt_jax.train.ttt import RunConfig
from ttt_jax.train.ttt_config import TTTConfig


def get_config(arg: str = '') -> config_dict.ConfigDict:
  runlocal = arg == 'runlocal'
  if arg not in ('', 'runlocal', 'gpu'):
    raise ValueError(f"configs/ttt.py: unknown argument {arg!r}; use '', 'runlocal' or 'gpu'")
  c = config_dict.ConfigDict()

  # Base model (ttt_jax.model.builtin.ModelSpec): 'builtin' (the shipped stage-1 model,
  # docs/BUILTIN_MODEL.md), an HF checkpoint dir (vocab shrunk to the 16 ARC tokens), or
  # '': a random-init preset. model.quantize='nf4' is the paper's QLoRA arm (docs/TTT.md).
  c.model = to_config_dict(ModelSpec())
  if not runlocal:
    c.model.compute_dtype, c.model.remat = 'bfloat16', 'full'
  if arg == 'gpu':  # the paper's recipe with bf16 base weights (configs/gpu.py)
    gpu.apply(c.model)

  # TTT data per task (ttt_jax.data.ttt_data.TTTDataConfig): leave-one-out x invertible
  # augmentations. The paper's data arms (docs/TTT.md "Arms"): d8 = colors = False is
  # "No transformations" (the demonstration order still shuffled, as the reference's
  # --no_transform); mode='direct_io' is "E2E data"; loss='no_demonstration_loss' (or
  # 'inputs_too') changes the loss mask.
  # recipe='marc': the reference's own data (docs/TTT.md), no_transform=True its
  # "no transformation" run.
  c.data = to_config_dict(TTTDataConfig())
  c.data.selector = 'arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt'
  if runlocal:
    c.data.selector = 'arc1/eval@slice=0:4'
    c.data.max_examples, c.data.seq_len, c.data.augmentations_per_task = 16, 1024, 4

  # Per-task adapter training (ttt_jax.train.ttt_config.TTTConfig): the paper's values.
  c.ttt = to_config_dict(TTTConfig())
  if runlocal:
    c.ttt.lora.rank, c.ttt.epochs, c.ttt.max_steps = 8, 1, 4

  # The run (ttt_jax.train.ttt.RunConfig): slots trained together, an optional in-step
  # sweep (lrs, alphas, ranks, weight_decays, warmup_fracs, step_caps), checkpoints, the device mesh, multi-host start-up; run.shared_adapter=True is the
  # paper's "Shared TTT" arm (one adapter for all tasks).
  c.run = to_config_dict(RunConfig())
  if runlocal:
    c.run.num_slots, c.run.checkpoint_every = 4, 0
  return c
