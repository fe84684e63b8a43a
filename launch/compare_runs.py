r"""pass@2 per kind of task and paired sign tests of a demo run's prediction arms.

  python -m launch.compare_runs --workdir=runs/results/gen120 \
      --solutions=gen:heldout@ids_file=configs/data/generated_heldout120.txt

Reads WORKDIR/predict_{base,ttt}[_free]/submission.json (launch.demo writes
them; `_free` with --config.compare_free_decoding), prints the table and the
sign tests, and writes them to WORKDIR/compare.md.
"""

import os

from absl import app, flags

from ttt_jax import errors
from ttt_jax.eval import compare, metrics

_WORKDIR = flags.DEFINE_string('workdir', None, 'A launch.demo workdir.', required=True)
_SOLUTIONS = flags.DEFINE_string(
    'solutions', None, "The tasks' selector (or a Kaggle solutions.json).", required=True
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  with errors.as_usage_errors():
    text = compare.compare_workdir(_WORKDIR.value, metrics.load_solutions(_SOLUTIONS.value))
  with open(os.path.join(_WORKDIR.value, 'compare.md'), 'w') as f:
    f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  app.run(main)
