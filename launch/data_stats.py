"""Token-length statistics of an ARC source.

  python -m launch.data_stats --source=arc1/eval
  python -m launch.data_stats --source='dir:/data/tasks@slice=0:100'
"""

from absl import app, flags

from ttt_jax.data.arc import load_tasks
from ttt_jax.data.format import token_length_stats

_SOURCE = flags.DEFINE_string('source', 'arc1/eval', 'A task selector (see ttt_jax/data/arc.py).')
_BUDGETS = flags.DEFINE_list('budgets', ['1024', '2048', '4096', '8192'], 'Token budgets.')


def main(argv):
    del argv
    tasks, report = load_tasks(_SOURCE.value)
    stats = token_length_stats(tasks, [int(b) for b in _BUDGETS.value])
    print(report.summary())
    for what, label in (('tasks', 'whole tasks (demos + test pair)'), ('pairs', 'single pairs')):
        s = stats[what]
        print(f'{label}: {s["count"]}')
        if s['count']:
            print(f'  median {s["median"]:.0f} tokens, max {s["max"]}')
            for budget, n in s['fits'].items():
                print(f'  fit in {budget:>5}: {n:5d} ({100 * n / s["count"]:.1f}%)')


if __name__ == '__main__':
    app.run(main)
