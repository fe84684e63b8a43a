r"""Runs a directory of ARC programs in the sandbox on their tasks; one JSON record each.

  python -m launch.verify_programs --programs=DIR --selector=arc1/train \
      --function_name=main --transpose --out=runs/seeds.jsonl

Files are named `<task id>.py` or `<task id>_<anything>.py`; each defines
--function_name (BARC's seeds: main; the induction model's programs: transform)
taking an input grid (an int numpy array) and returning the output grid. Each
program runs on every demonstration and test input of its task, in the sandbox
(docs/INDUCTION.md); --out gets one ProgramRecord per program (program,
task_id, train_verdicts, test_outputs, test_verdicts, error) as it finishes. A
rerun skips the programs already in --out.
"""

from absl import app, flags

from ttt_jax import errors
from ttt_jax.data.arc import load_tasks
from ttt_jax.induction import program_dir, sandbox

_PROGRAMS = flags.DEFINE_string('programs', None, 'A directory of program files.', required=True)
_SELECTOR = flags.DEFINE_string(
    'selector', None, 'The tasks (a selector, see ttt_jax/data/arc.py).', required=True
)
_FUNCTION = flags.DEFINE_string('function_name', 'transform', 'The function each program defines.')
_OUT = flags.DEFINE_string(
    'out', None, 'The JSON-lines file of records (appended to).', required=True
)
_TIMEOUT = flags.DEFINE_float(
    'timeout_s', sandbox.Limits.timeout_s, 'Wall-clock seconds per input.'
)
_MEMORY = flags.DEFINE_integer('memory_mb', sandbox.Limits.memory_mb, 'Memory a program may add.')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Sandbox worker processes (0: one per CPU).')
_TRANSPOSE = flags.DEFINE_bool(
    'transpose',
    False,
    'Run programs on transposed grids, transpose outputs back (BARC seeds: grid[x, y], x the column).',
)
_BWRAP = flags.DEFINE_enum('bwrap', 'auto', ['auto', 'on', 'off'], 'Run workers in bubblewrap.')


def main(argv):
  del argv
  with errors.as_usage_errors():
    with errors.blame('selector'):
      tasks, report = load_tasks(_SELECTOR.value)
    if report.num_skipped:
      print(report.summary())
    summary = program_dir.verify_dir(
        _PROGRAMS.value,
        {t.id: t for t in tasks},
        _OUT.value,
        function_name=_FUNCTION.value,
        limits=sandbox.Limits(timeout_s=_TIMEOUT.value, memory_mb=_MEMORY.value),
        workers=_WORKERS.value or None,
        bwrap=_BWRAP.value,
        transpose=_TRANSPOSE.value,
    )
  print('\n'.join(summary.lines()))


if __name__ == '__main__':
  app.run(main)
