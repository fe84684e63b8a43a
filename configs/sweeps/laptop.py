"""The laptop recipe search: which TTT recipe helps the built-in 1M-parameter model?

  python -m launch.sweep --sweep=configs/sweeps/laptop.py --workdir=runs/laptop_val
  python -m launch.sweep --sweep=configs/sweeps/laptop.py:heldout --workdir=runs/laptop_heldout \
      --arms=baseline,no_ttt,PICK

Every arm is `make demo`'s job (configs/demo.py) changed in one place, on the frozen
validation split of our generated tasks (configs/data/generated_val60.txt: the held-out
variants, seeds of their own; fixed before any result). The pick is made on this
table alone; then the pick, the baseline and no TTT run once on the pre-registered
held-out 120 (`:heldout`) and on the demo's 16 tasks (`:demo`): docs/RESULTS.md.
Another base model for every arm: `:SPLIT,base=DIR` (e.g. `:,base=runs/ft_laptop2/hf`
for the validation split, `:heldout,base=...`), an exported stage-1 checkpoint.
"""

from ttt_jax.sweep import spec

SELECTORS = {
    '': 'gen:val@ids_file=configs/data/generated_val60.txt',
    'heldout': 'gen:heldout@ids_file=configs/data/generated_heldout120.txt',
    'demo': None,  # configs/demo.py's own 16 tasks
}
TTT_ONLY = ('ttt', 'predict_ttt')  # the no-TTT arm predicts the base model once for all

ARMS = (
    spec.Arm('baseline', stages=TTT_ONLY),  # today's demo recipe
    spec.Arm('no_ttt', stages=('predict_base',)),
    # Colour permutations relabel a colour-map task's mapping: geometric augmentation only.
    spec.Arm('geometric_only', {'ttt.data.colors': False}, stages=TTT_ONLY),
    spec.Arm('more_steps', {'ttt.ttt.epochs': 4}, stages=TTT_ONLY),
    spec.Arm('lr=0.003', {'ttt.ttt.lr': 3e-3}, stages=TTT_ONLY),
    spec.Arm('rank=64', {'ttt.ttt.lora.rank': 64}, stages=TTT_ONLY),
    spec.Arm('direct_io', {'ttt.data.mode': 'direct_io'}, stages=TTT_ONLY),
    spec.Arm('shared', {'ttt.run.shared_adapter': True}, stages=TTT_ONLY),
    # Round 2, chosen after round 1's table (geometric_only was the best arm): it combined
    # with one more change each, and no augmentation at all.
    spec.Arm('no_transformations', {'ttt.data.colors': False, 'ttt.data.d8': False}, TTT_ONLY),
    *(
        spec.Arm(f'geometric_only+{name}', {'ttt.data.colors': False, **change}, TTT_ONLY)
        for name, change in (
            ('examples=48', {'ttt.data.max_examples': 48, 'ttt.data.augmentations_per_task': 32}),
            ('lr=0.0003', {'ttt.ttt.lr': 3e-4}),
            ('epochs=1', {'ttt.ttt.epochs': 1}),
            ('loss=all_outputs', {'ttt.data.loss': 'all_outputs'}),
        )
    ),
)


def get_sweep(arg: str = '') -> spec.Sweep:
  split, _, base = arg.partition(',base=')
  if split not in SELECTORS or (',' in arg and not base):
    raise ValueError(
        f'configs/sweeps/laptop.py: unknown argument {arg!r}; use SPLIT or SPLIT,base=DIR '
        f'with SPLIT one of {tuple(SELECTORS)}'
    )
  overrides = {'selector': SELECTORS[split]} if SELECTORS[split] else {}
  if base:
    overrides |= {'ttt.model.checkpoint_dir': base, 'predict.model.checkpoint_dir': base}
  return spec.Sweep(config='configs/demo.py', arms=ARMS, overrides=overrides)
