"""The smallest real sweep (the test suite runs it): 2 arms on 2 generated tasks, tiny budgets.

  python -m launch.sweep --sweep=configs/sweeps/smoke.py --workdir=runs/smoke

`baseline` is the demo's recipe cut to 2 TTT steps and 2 prompts per test input;
`no_ttt` predicts with the base model alone.
"""

from ttt_jax.sweep import spec


def get_sweep(arg: str = '') -> spec.Sweep:
  if arg:
    raise ValueError(f'configs/sweeps/smoke.py takes no argument, got {arg!r}')
  return spec.Sweep(
      config='configs/demo.py',
      overrides={
          'selector': 'gen:heldout@ids=gen-d8-6-100000,gen-recolor_by_size-4-100006',
          'ttt.data.max_examples': 4,
          'ttt.data.augmentations_per_task': 2,
          'ttt.ttt.max_steps': 2,
          'ttt.run.num_slots': 2,
          'predict.prompts.d8': (0, 4),
          'predict.prompts.orders': 0,
          'predict.prompts.max_variants': 2,
          'predict.tasks_per_group': 2,
      },
      arms=(
          spec.Arm('baseline', stages=('ttt', 'predict_ttt')),
          spec.Arm('no_ttt', stages=('predict_base',)),
      ),
  )
