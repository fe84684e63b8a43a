"""The main job (`make demo`): TTT + augmented inference + voting on CPU.

  python -m launch.demo                                   # the built-in default
  python -m launch.demo --config.selector=arc1/eval@slice=0:20 --config.ttt.data.seq_len=2048

Default tasks, chosen by rules fixed before any result was seen:
- the first 8 of our generated held-out split (configs/data/generated_heldout120.txt):
  one task of each held-out variant of the trained families, never trained on;
- ARC-AGI-1 evaluation: the 'easy' tasks of the paper's 80-task subset (H-ARC
  levels) whose whole task, every demonstration and the test pair, fits in
  1024 of our tokens: 8 tasks.
Each is predicted twice with the same prompts and voting, by the base model
and by the base model + its own TTT adapter.
"""

from ml_collections import config_dict

from configs import predict as predict_config
from configs import ttt as ttt_config

DEMO_GENERATED = (
    'gen-d8-6-100000',
    'gen-color_map-4-100001',
    'gen-upscale-2x3-100002',
    'gen-tile-2x2-mirror-100003',
    'gen-boolean-xor-lr-100004',
    'gen-boolean-or-tb-100005',
    'gen-recolor_by_size-4-100006',
    'gen-crop_odd-3-100007',
)
DEMO_TASKS = (
    '66e6c45b',
    'f3cdc58f',
    'c7d4e6ad',
    '00576224',
    'ef26cbf6',
    '7ee1c6ea',
    '1a2e2828',
    '770cc55f',
)


def get_config(arg: str = '') -> config_dict.ConfigDict:
  if arg:
    raise ValueError(f'configs/demo.py takes no argument, got {arg!r}')
  c = config_dict.ConfigDict()
  c.selector = f'gen:heldout@ids={",".join(DEMO_GENERATED)}|arc1/eval@ids={",".join(DEMO_TASKS)}'
  c.ttt = ttt_config.get_config('runlocal')
  c.predict = predict_config.get_config('runlocal')
  # One task selection for both stages: --config.selector overrides both.
  c.ttt.data.selector = c.predict.selector = c.get_ref('selector')
  c.ttt.data.seq_len = 1024
  c.ttt.data.max_examples = 24  # leave-one-out x augmentations per task
  c.ttt.data.augmentations_per_task = 16
  c.ttt.ttt.lora.rank = 16
  c.ttt.ttt.lr = 1e-3  # the built-in model is tiny: a larger lr than the paper's 1B
  c.ttt.ttt.epochs = 2
  c.ttt.ttt.max_steps = config_dict.placeholder(int)
  c.ttt.run.num_slots = 4
  c.predict.prompts.d8 = (0, 1, 2, 4, 5)  # identity, rot90, rot180, transpose, flip: the paper's
  c.predict.prompts.orders = 2
  c.predict.prompts.max_variants = 10
  c.predict.max_new_tokens = 256
  c.predict.tasks_per_group = 4
  # Also predict both arms with free decoding (shapes='none') and print that table too.
  c.compare_free_decoding = False
  return c
