"""The induction half (launch.induce; ttt_jax/induction/induce.py): sample programs from an
induction checkpoint, run them in the sandbox, vote.

  python -m launch.induce --config=configs/induce.py --output_dir=/runs/induce \
      --config.model.checkpoint_dir=hf:barc0/Llama-3.1-ARC-Potpourri-Induction-8B

Each block is its dataclass's defaults: BARC's sampling (temperature 0.8, top-p 1, <= 1536
new tokens, 2048 programs a task) and execution (2 s per input, BARC's vote counted per
test input). configs/reproduce/barc_induction_8b.py is the paper's run (20k a task).
"""

from ml_collections import config_dict

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.induction.induce import ExecuteConfig
from ttt_jax.induction.sample import SampleConfig
from ttt_jax.model.builtin import ModelSpec


def get_config(arg: str = '') -> config_dict.ConfigDict:
  if arg:
    raise ValueError(f'configs/induce.py: unknown argument {arg!r}')
  c = config_dict.ConfigDict()
  c.selector = 'arc1/eval'
  c.model = to_config_dict(ModelSpec())
  c.model.checkpoint_dir = config_dict.placeholder(str)  # an induction checkpoint: required
  c.sample = to_config_dict(SampleConfig())
  c.execute = to_config_dict(ExecuteConfig())
  return c
