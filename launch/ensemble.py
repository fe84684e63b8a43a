r"""Induction + TTT transduction per task (BARC's rule): a submission and a report.

  python -m launch.ensemble --config=configs/ensemble.py --output_dir=/runs/ensemble \
      --config.ttt=/runs/ttt/predict --config.induction=/runs/induce/records.jsonl
  python -m launch.ensemble --config=configs/reproduce/barc_induction_8b.py:ensemble \
      --output_dir=/runs/ensemble --config.ttt=/runs/barc8b/predict_ttt \
      --config.released=hf:barc0/induction_samples_with_execution_results

Writes output_dir/submission.json and choices.json (which side answered each task)
and, when the tasks' test outputs are known, report.json and report.md (printed):
per task the side and each side's score; induction alone, TTT alone, the ensemble
and the oracle, with fractional credit per test input and all-or-nothing per task.
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors
from ttt_jax.induction import ensemble

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/ensemble.py', 'Ensemble config file.', lock_config=True
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where the results go.', required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  with errors.as_usage_errors():
    data = ensemble.run_ensemble(ensemble.EnsembleRun.from_config(_CONFIG.value), _OUTPUT_DIR.value)
  if data is not None:
    print(ensemble.report_markdown(data), end='')


if __name__ == '__main__':
  app.run(main)
