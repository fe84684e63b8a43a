r"""The induction half: sample programs, run them in the sandbox, vote (docs/INDUCTION.md).

  python -m launch.induce --config=configs/induce.py --output_dir=/runs/induce \
      --config.model.checkpoint_dir=hf:barc0/Llama-3.1-ARC-Potpourri-Induction-8B
  python -m launch.induce --config=configs/reproduce/barc_induction_8b.py \
      --output_dir=/runs/induce --config.model.checkpoint_dir=/ckpt/induction-8b

Writes output_dir/samples.jsonl (the programs), records.jsonl (one ProgramRecord per
sample: what launch.ensemble reads), tasks/<id>.json (per task: programs, correct ones,
the vote) and submission.json (induction alone; report/ where test outputs are known).
Each stage resumes where a killed run stopped.
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs
from ttt_jax.eval import metrics
from ttt_jax.induction import induce

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/induce.py', 'Induction config file.', lock_config=True
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where the results go.', required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  config = _CONFIG.value
  knobs.override_model(config.model)
  with errors.as_usage_errors():
    score = induce.run_induce(induce.InduceRun.from_config(config), _OUTPUT_DIR.value)
  if score is not None:
    print(f'Induction alone: {metrics.summary(score)}')


if __name__ == '__main__':
  app.run(main)
