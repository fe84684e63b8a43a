"""BARC's Llama-3.1-ARC-Potpourri-Transduction-8B + the paper's TTT: 53.0% pass@2 on
ARC-AGI-1 evaluation in the paper.

  python -m launch.demo --config=configs/reproduce/barc_8b.py \
      --config.checkpoint_dir=/dl/Llama-3.1-ARC-Potpourri-Transduction-8B --workdir=/runs/barc8b

Its `--barc_format` prompts; loss on the answer only (what the reference's torchtune fork
does for this format without the README's optional edit); lr 1e-4 (8B).
"""

from configs.reproduce.common import recipe


def get_config(arg: str = ''):
  return recipe(arg, format_name='barc', lr=1e-4, loss='test_only', num_slots=1, loss_capacity=4096)
