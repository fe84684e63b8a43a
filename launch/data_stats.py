"""Token-length statistics of an ARC source; optionally, the ids of its shortest tasks.

  python -m launch.data_stats --source=arc1/eval
  python -m launch.data_stats --source='dir:/data/tasks@slice=0:100'
  python -m launch.data_stats --source=arc1/eval --shortest=100 \
      --ids_out=configs/data/arc1_eval_shortest100.txt
  python -m launch.data_stats --source=arc1/eval --format=marc --tokenizer_dir=/ckpt/marc-8B

Lengths are in the given token format (ttt_jax/formats); --shortest ranks by the
compact format's lengths (the rule that made configs/data/arc1_eval_shortest100.txt).
"""

from absl import app, flags

from ttt_jax import errors, formats
from ttt_jax.data.arc import load_tasks
from ttt_jax.data.format import shortest_tasks, task_length
from ttt_jax.data.ttt_data import TTTDataConfig
from ttt_jax.formats.stats import token_length_stats, ttt_token_stats

_SOURCE = flags.DEFINE_string('source', 'arc1/eval', 'A task selector (see ttt_jax/data/arc.py).')
_BUDGETS = flags.DEFINE_list('budgets', ['1024', '2048', '4096', '8192'], 'Token budgets.')
_SHORTEST = flags.DEFINE_integer('shortest', 0, 'Write the ids of the N shortest tasks.')
_IDS_OUT = flags.DEFINE_string('ids_out', None, 'Where --shortest writes its ids (an ids_file).')
_TTT = flags.DEFINE_bool(
    'ttt',
    False,
    "Also the TTT data's cost per task (the paper's TTTDataConfig, as run_ttt seeds it).",
)
_FORMAT = flags.DEFINE_enum('format', 'compact', formats.FORMATS, 'The token format.')
_TOKENIZER_DIR = flags.DEFINE_string(
    'tokenizer_dir',
    '',
    'A checkpoint dir with tokenizer.json + tokenizer_config.json (text formats).',
)


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
  with errors.as_usage_errors():
    with errors.blame('source'):
      tasks, report = load_tasks(_SOURCE.value)
    with errors.blame('tokenizer_dir'):
      fmt = formats.load_format(_FORMAT.value, _TOKENIZER_DIR.value)
  stats = token_length_stats(tasks, [int(b) for b in _BUDGETS.value], fmt)
  print(report.summary())
  print(f'format: {fmt.name}')
  for what, label in (('tasks', 'whole tasks (demos + test pair)'), ('pairs', 'single pairs')):
    s = stats[what]
    print(f'{label}: {s["count"]}')
    if s['count']:
      print(f'  median {s["median"]:.0f} tokens, max {s["max"]}')
      for budget, n in s['fits'].items():
        print(f'  fit in {budget:>5}: {n:5d} ({100 * n / s["count"]:.1f}%)')
  if _TTT.value:
    config = TTTDataConfig(train_only_prob=0.5)  # configs/reproduce: the paper's TTT data
    s = ttt_token_stats(tasks, config, fmt)
    print(f'TTT data ({config}), per task over {s["tasks"]} tasks:')
    for what in ('examples', 'tokens', 'targets'):
      print(f'  {what}: median {s[what]["median"]:.0f}, total {s[what]["total"]}')
  if _SHORTEST.value:
    if not _IDS_OUT.value:
      raise app.UsageError('--shortest needs --ids_out')
    write_shortest(_SOURCE.value, tasks, _SHORTEST.value, _IDS_OUT.value)


if __name__ == '__main__':
  app.run(main)
