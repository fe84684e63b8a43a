"""BARC's Llama-3.1-ARC-Potpourri-Induction-8B sampled as BARC sampled it, and its ensemble
with TTT on BARC's transduction model (configs/reproduce/barc_8b.py): the paper's 61.9%.

  get_config('sample')    the sampling run (induction/sample.py SampleRun): 20k programs
                          per task at temperature 0.8, top-p 1, <= 1536 new tokens,
                          prompts over 8000 tokens skipped (finetune/inference/
                          vllm_inference.py); bf16 weights and compute
  get_config('ensemble')  launch.ensemble with BARC's evaluation.py rule: the vote's
                          counter carried over between test inputs, a lone induction
                          answer submitted alone (attempt 2 repeats it)
  get_config('')          launch.induce's run (sampling + execution, BARC's vote) and the
                          ensemble block, sharing the selector

  python -m launch.induce --config=configs/reproduce/barc_induction_8b.py \
      --output_dir=/runs/induce --config.model.checkpoint_dir=/ckpt/induction-8b

  python -m launch.ensemble --config=configs/reproduce/barc_induction_8b.py:ensemble \
      --output_dir=/runs/ensemble --config.ttt=/runs/barc8b/predict_ttt \
      --config.released=hf:barc0/induction_samples_with_execution_results
"""

from ml_collections import config_dict

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.induction.ensemble import EnsembleRun
from ttt_jax.induction.induce import ExecuteConfig
from ttt_jax.induction.sample import SampleConfig
from ttt_jax.model.builtin import ModelSpec


def _sample() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.selector = 'arc1/eval'
  c.model = to_config_dict(ModelSpec(param_dtype='bfloat16', compute_dtype='bfloat16'))
  c.model.checkpoint_dir = config_dict.placeholder(str)  # the downloaded checkpoint: required
  c.sample = to_config_dict(SampleConfig())
  c.sample.num_samples = 20_000
  # One 80 GB GPU: 32 rows of up to 8000 + 1536 tokens of KV cache (128 KB a token) ~ 40 GB
  # beside the 16 GB of weights.
  c.sample.batch_size = 32
  c.sample.samples_per_round = 256
  c.sample.length_multiple = 512
  return c


def _ensemble() -> config_dict.ConfigDict:
  c = to_config_dict(EnsembleRun())
  c.ensemble.carry_over = True
  c.ensemble.second_attempt = 'repeat'
  return c


def get_config(arg: str = '') -> config_dict.ConfigDict:
  if arg not in ('', 'sample', 'ensemble'):
    raise ValueError(
        f"configs/reproduce/barc_induction_8b.py: unknown argument {arg!r}; use '', 'sample' "
        "or 'ensemble'"
    )
  if arg == 'sample':
    return _sample()
  if arg == 'ensemble':
    return _ensemble()
  c = _sample()
  c.execute = to_config_dict(ExecuteConfig(carry_over=True))  # BARC's vote
  c.ensemble = _ensemble()
  c.ensemble.selector = c.get_ref('selector')
  return c
