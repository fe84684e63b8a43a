"""Every arm of the paper's 1B ablation table as one sweep (launch.sweep, docs/SWEEPS.md).

  python -m launch.sweep --sweep=configs/reproduce/paper_ablations_1b.py:/runs/ft1b/hf \
      --workdir=/runs/ablations_1b --executor=slurm --dry_run
  python -m launch.sweep --sweep=configs/reproduce/paper_ablations_1b.py:cpu \
      --workdir=runs/ablations_cpu     # the same arms, built-in model, 16 tasks, tiny budgets

The argument is a Llama-3.2-1B the user fine-tuned in the paper's text format
(configs/reproduce/llama32_1b.py; an HF directory or an hf: id), or `cpu`. Every
arm runs the reference's own recipe (ekinakyurek/marc: its TTT data, inference
queries and hierarchical vote) on the paper's 80-task subset and changes one thing.
The paper's numbers are tasks solved of 80, all-or-nothing per task (the table's
`solved` column):

| arm | what changes | paper (1B) |
|---|---|---|
| no_ttt | the fine-tuned model alone (FT) | 5 |
| baseline | FT + TTT, the reference's recipe | 29 |
| no_transformations | TTT data without augmenters or colour permutations | 13 |
| e2e_data | each demonstration pair alone, loss on its output (our builder: the reference's code has no E2E arm) | 18 |
| shared_ttt | one adapter on the pooled data of all tasks | 22 |
| no_demo_loss | loss on the test output only | 26 |
| qlora | the frozen base in NF4 for TTT and prediction | 26 |

The inference ablations are readouts of every arm's stored candidates, nothing
decoded again: `marc` (the reference's vote, the headline), `hierarchical` (ours),
`flat`, `vanilla` (identity prompts only), `single_<t>` (one transformation's
prompts alone), `oracle` (solved if any candidate is right).
"""

from ttt_jax.sweep import spec

SUBSET = 'arc1/eval@ids_file=configs/data/arc1_eval_80_subset.txt'
# configs/demo.py's 16 tasks (8 generated, 8 easy ARC-AGI-1 evaluation tasks).
CPU_OVERRIDES = {
    'ttt.data.max_examples': 8,
    'ttt.ttt.max_steps': 2,
    'ttt.run.num_slots': 4,
    'predict.max_new_tokens': 128,
}
REFERENCE = {  # the reference's recipe, every arm
    'ttt.data.recipe': 'marc',
    'predict.prompts.recipe': 'marc',
    'predict.prompts.leave_out': 1,
    'predict.vote.method': 'marc',
}
READOUTS = (
    'hierarchical',
    'flat',
    'vanilla',
    *(f'single_{t}' for t in ('transpose', 'flip_ud', 'flip_lr', 'rot90', 'rot180')),
    'oracle',
)


def _arms(quantize: dict) -> tuple[spec.Arm, ...]:
  ttt = ('ttt', 'predict_ttt')
  return (
      spec.Arm('no_ttt', stages=('predict_base',)),
      spec.Arm('baseline', stages=ttt),
      spec.Arm('no_transformations', {'ttt.data.no_transform': True}, stages=ttt),
      spec.Arm('e2e_data', {'ttt.data.recipe': 'ttt_jax', 'ttt.data.mode': 'direct_io'}, ttt),
      spec.Arm('shared_ttt', {'ttt.run.shared_adapter': True}, stages=ttt),
      spec.Arm('no_demo_loss', {'ttt.data.loss': 'no_demonstration_loss'}, stages=ttt),
      spec.Arm('qlora', quantize, stages=ttt),
  )


def get_sweep(arg: str = '') -> spec.Sweep:
  if not arg:
    raise ValueError(
        'configs/reproduce/paper_ablations_1b.py needs an argument: the fine-tuned 1B '
        'checkpoint (PATH or hf:owner/name), or cpu'
    )
  nf4 = {'ttt.model.quantize': 'nf4', 'predict.model.quantize': 'nf4'}
  if arg == 'cpu':
    return spec.Sweep(
        'configs/demo.py', _arms(nf4), {**REFERENCE, **CPU_OVERRIDES}, readouts=READOUTS
    )
  overrides = {**REFERENCE, 'selector': SUBSET, 'checkpoint_dir': arg}
  return spec.Sweep(
      'configs/reproduce/llama32_1b.py',
      _arms(nf4),
      overrides,
      resources=spec.Resources(gpus_per_node=1, time='24:00:00'),
      readouts=READOUTS,
  )
