r"""Scores a submission.json as the ARC Prize does (pass@2) and writes a report.

  python -m launch.evaluate --submission out/submission.json \
      --solutions arc1/eval --report_dir out/report

--solutions is a Kaggle solutions.json or any `ttt_jax.data.arc.load_tasks`
selector whose tasks have test outputs (arc1/eval, dir:PATH, kaggle:C,S, ...).
Writes report.json and report.md to --report_dir and prints the table and the
score both ways (by test input, and whole tasks). Levels (per-level totals)
come from configs/data/*levels.csv unless --levels names another CSV.
"""

import os

from absl import app, flags

from ttt_jax.eval import metrics

_SUBMISSION = flags.DEFINE_string(
    'submission', None, 'submission.json (Kaggle format).', required=True
)
_SOLUTIONS = flags.DEFINE_string(
    'solutions',
    None,
    'A Kaggle solutions.json, or a task selector (e.g. arc1/eval).',
    required=True,
)
_REPORT_DIR = flags.DEFINE_string('report_dir', None, 'Where report.json/.md go.', required=True)
_LEVELS = flags.DEFINE_string(
    'levels', None, 'A task_id,level CSV for per-level totals (default: configs/data/*levels.csv).'
)
_DETAILS = flags.DEFINE_string(
    'details', None, 'Optional voting details JSON from prediction (votes, found_by).'
)


def main(argv):
  del argv
  score = metrics.evaluate(
      _SUBMISSION.value,
      _SOLUTIONS.value,
      _REPORT_DIR.value,
      levels_path=_LEVELS.value,
      details_path=_DETAILS.value,
  )
  with open(os.path.join(_REPORT_DIR.value, 'report.md')) as f:
    print(f.read(), end='')
  print(metrics.summary(score))


if __name__ == '__main__':
  app.run(main)
