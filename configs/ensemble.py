"""Induction + TTT transduction, per task (launch.ensemble; ttt_jax/induction/ensemble.py).

  python -m launch.ensemble --config=configs/ensemble.py --output_dir=/runs/ensemble \
      --config.ttt=/runs/ttt/predict --config.induction=/runs/induce/records.jsonl
  python -m launch.ensemble --config=configs/ensemble.py --output_dir=/runs/ensemble \
      --config.ttt=/runs/ttt/predict \
      --config.released=hf:barc0/induction_samples_with_execution_results

The block is EnsembleRun's defaults: all 400 ARC-AGI-1 evaluation tasks, each test
input's induction vote counted alone, a lone induction answer paired with TTT's.
configs/reproduce/barc_induction_8b.py:ensemble is BARC's rule exactly.
"""

from ml_collections import config_dict

from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.induction.ensemble import EnsembleRun


def get_config(arg: str = '') -> config_dict.ConfigDict:
  if arg:
    raise ValueError(f'configs/ensemble.py: unknown argument {arg!r}')
  return to_config_dict(EnsembleRun())
