"""Token-length statistics of an ARC source; optionally, the ids of its shortest tasks.

  python -m launch.data_stats --source=arc1/eval
  python -m launch.data_stats --source='dir:/data/tasks@slice=0:100'
  python -m launch.data_stats --source=arc1/eval --shortest=100 \
      --ids_out=configs/data/arc1_eval_shortest100.txt
"""

from absl import app, flags

from ttt_jax.data.arc import load_tasks
from ttt_jax.data.format import shortest_tasks, task_length, token_length_stats

_SOURCE = flags.DEFINE_string('source', 'arc1/eval', 'A task selector (see ttt_jax/data/arc.py).')
_BUDGETS = flags.DEFINE_list('budgets', ['1024', '2048', '4096', '8192'], 'Token budgets.')
_SHORTEST = flags.DEFINE_integer('shortest', 0, 'Write the ids of the N shortest tasks.')
_IDS_OUT = flags.DEFINE_string('ids_out', None, 'Where --shortest writes its ids (an ids_file).')


def write_shortest(source: str, tasks, n: int, path: str) -> None:
  by_id = {t.id: t for t in tasks}
  ids = shortest_tasks(tasks, n)
  with open(path, 'w') as f:
    f.write(
        f'# The {len(ids)} tasks of {source} with the fewest tokens (all demonstrations +\n'
        f'# the longest test pair, ties by id): python -m launch.data_stats '
        f'--source={source} --shortest={n}\n'
    )
    f.writelines(f'{i}  # {task_length(by_id[i])} tokens\n' for i in ids)
  print(f'wrote {len(ids)} ids to {path} (longest: {task_length(by_id[ids[-1]])} tokens)')


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
  if _SHORTEST.value:
    if not _IDS_OUT.value:
      raise app.UsageError('--shortest needs --ids_out')
    write_shortest(_SOURCE.value, tasks, _SHORTEST.value, _IDS_OUT.value)


if __name__ == '__main__':
  app.run(main)
