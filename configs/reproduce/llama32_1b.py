"""A Llama-3.2-1B-Instruct that the user fine-tuned on ARC-like tasks in the paper's text
format (launch.finetune with --config.model.format=marc), + the paper's TTT: the paper's
1B went from 5 to 29 of its 80 tasks with TTT.

  python -m launch.demo --config=configs/reproduce/llama32_1b.py \
      --config.checkpoint_dir=/runs/ft1b/hf --workdir=/runs/ttt1b

lr 5e-5 (1B, 3B); a 1B model leaves room for 4 tasks a step on an 80 GB GPU.
"""

from configs.reproduce.common import recipe


def get_config(arg: str = ''):
  return recipe(
      arg, format_name='marc', lr=5e-5, loss='all_but_first', num_slots=4, loss_capacity=12288
  )
