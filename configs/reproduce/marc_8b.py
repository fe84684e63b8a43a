"""The paper's fine-tuned Llama-3-8B (ekinakyurek/marc-8B-finetuned-llama3) + its TTT:
18.3% -> 47.1% pass@2 on ARC-AGI-1 evaluation in the paper.

  python -m launch.demo --config=configs/reproduce/marc_8b.py \
      --config.checkpoint_dir=/dl/marc-8B-finetuned-llama3 --workdir=/runs/marc8b

Its `--new_format` prompts (ttt_jax/formats/text.py), loss on every demonstration output
after the first and the answer (its torchtune fork's unmask_outputs), lr 1e-4 (8B).
docs/REPRODUCE.md has the whole procedure.
"""

from configs.reproduce.common import recipe


def get_config(arg: str = ''):
  return recipe(
      arg, format_name='marc', lr=1e-4, loss='all_but_first', num_slots=1, loss_capacity=12288
  )
