"""pass@2 scoring, submission files and reports."""

import json
import re

import pytest

from ttt_jax.eval import metrics

A = [[1, 2], [3, 4]]
B = [[0]]
C = [[5, 5, 5]]
WRONG = [[9, 9], [9, 9]]

# Three tasks, four test inputs: t1 has one, t2 two, t3 one.
SOLUTIONS = {'t1': [A], 't2': [B, C], 't3': [C]}
LEVELS = {'t1': 'easy', 't2': 'hard', 't3': 'hard'}


def entry(a1, a2):
  return {'attempt_1': a1, 'attempt_2': a2}


def perfect():
  return {tid: [entry(g, WRONG) for g in grids] for tid, grids in SOLUTIONS.items()}


def test_perfect_submission_scores_number_of_tasks():
  score = metrics.score_submission(perfect(), SOLUTIONS)
  assert score.total == 3.0
  assert score.mean == 1.0
  assert score.num_solved == 3
  assert all(t.solved_by == (1,) * t.num_tests for t in score.tasks)


def test_empty_submission_scores_zero_without_crashing():
  score = metrics.score_submission({}, SOLUTIONS)
  assert (score.total, score.num_solved, score.num_tasks) == (0.0, 0, 3)
  assert [t.problems for t in score.tasks] == [('missing from submission',)] * 3


def test_half_right_submission_gives_exact_fractions():
  sub = {
      't1': [entry(A, WRONG)],  # 1
      't2': [entry(WRONG, WRONG), entry(WRONG, C)],  # 1 of 2, via attempt_2
  }  # t3 missing: 0
  score = metrics.score_submission(sub, SOLUTIONS, LEVELS)
  by_id = {t.task_id: t for t in score.tasks}
  assert by_id['t2'].score == 0.5
  assert by_id['t2'].solved_by == (None, 2)
  assert (score.total, score.mean, score.num_solved) == (1.5, 0.5, 1)
  easy, hard = score.by_level['easy'], score.by_level['hard']
  assert (easy.num_tasks, easy.total, easy.num_solved) == (1, 1.0, 1)
  assert (hard.num_tasks, hard.total, hard.num_solved, hard.mean) == (2, 0.5, 0, 0.25)


def test_attempt_2_counts_and_attempt_1_is_credited_when_both_right():
  only_second = metrics.score_task('t', [entry(WRONG, A)], [A])
  both = metrics.score_task('t', [entry(A, A)], [A])
  assert (only_second.score, only_second.solved_by) == (1.0, (2,))
  assert (both.score, both.solved_by) == (1.0, (1,))


def test_shape_must_match_exactly():
  # Same colours, other shapes: a column or a shorter row is not the row.
  assert metrics.score_task('t', [entry([[5], [5], [5]], [[5, 5]])], [C]).score == 0.0


def test_malformed_entries_score_zero_and_are_reported():
  sub = {
      't1': [{'attempt_1': [[1, 2], [3]], 'attempt_2': A}],  # ragged first, right second
      't2': [{'attempt_2': B}, 'not a dict'],  # no attempt_1, still right
      't3': {'attempt_1': C},  # not a list
  }
  score = metrics.score_submission(sub, SOLUTIONS)
  by_id = {t.task_id: t for t in score.tasks}
  assert by_id['t1'].score == 1.0 and 'row 1 has length 1, expected 2' in by_id['t1'].problems[0]
  assert by_id['t2'].solved_by == (2, None)
  assert 'test 0 attempt_1: missing' in by_id['t2'].problems
  assert 'test 1: no dict of attempts' in by_id['t2'].problems
  assert by_id['t3'].score == 0.0 and 'expected a list' in by_id['t3'].problems[0]
  assert score.total == 1.5


def test_unknown_tasks_are_listed_not_scored():
  score = metrics.score_submission(dict(perfect(), extra=[entry(A, A)]), SOLUTIONS)
  assert score.unknown_tasks == ('extra',)
  assert (score.num_tasks, score.total) == (3, 3.0)


@pytest.mark.parametrize(
    'bad, message',
    [
        (
            {'t1': [{'attempt_1': [[1, 2], [3]], 'attempt_2': A}]},
            'task t1 test 0 attempt_1: grid row 1 has length 1, expected 2',
        ),
        ({'t1': [{'attempt_1': A}]}, 'task t1 test 0: missing attempt_2'),
        ({'t1': [entry(A, [[1, 10]])]}, 'task t1 test 0 attempt_2: grid row 0 col 1 is 10'),
        ({'t1': [entry(A, [[True]])]}, 'task t1 test 0 attempt_2: grid row 0 col 0 is True'),
        ({'t1': [entry(A, [])]}, 'task t1 test 0 attempt_2: grid must be a non-empty'),
        ({'t1': [entry(A, [[0] * 31])]}, 'task t1 test 0 attempt_2: grid has 31 columns'),
        ({'t1': []}, 'task t1: expected a non-empty list'),
        ({'t1': [dict(entry(A, A), attempt_3=A)]}, "unexpected fields ['attempt_3']"),
        ([entry(A, A)], 'submission: expected a dict'),
    ],
)
def test_validate_submission_names_task_and_field(bad, message):
  with pytest.raises(metrics.SubmissionError, match=re.escape(message)):
    metrics.validate_submission(bad)


def test_write_read_round_trip(tmp_path):
  path = tmp_path / 'submission.json'
  metrics.write_submission(path, perfect())
  assert metrics.read_submission(path) == perfect()
  # Kaggle format on disk: a list of attempt dicts per task.
  assert json.loads(path.read_text())['t2'][1] == {'attempt_1': C, 'attempt_2': WRONG}


def test_write_refuses_a_bad_submission(tmp_path):
  with pytest.raises(metrics.SubmissionError, match='task t1 test 0: missing attempt_2'):
    metrics.write_submission(tmp_path / 's.json', {'t1': [{'attempt_1': A}]})
  assert not (tmp_path / 's.json').exists()


def test_read_errors_name_the_file(tmp_path):
  broken = tmp_path / 'broken.json'
  broken.write_text('{"t1": [')
  with pytest.raises(metrics.SubmissionError, match='broken.json: not valid JSON'):
    metrics.read_submission(broken)
  ragged = tmp_path / 'ragged.json'
  ragged.write_text(json.dumps({'t9': [entry(A, [[1], [1, 2]])]}))
  with pytest.raises(
      metrics.SubmissionError,
      match='ragged.json: task t9 test 0 attempt_2: grid row 1 has length 2, expected 1',
  ):
    metrics.read_submission(ragged)
  solutions = tmp_path / 'solutions.json'
  solutions.write_text(json.dumps({'t1': [A, [[1, 2], [3]]]}))
  with pytest.raises(
      metrics.SubmissionError, match='solutions task t1 test 1: grid row 1 has length 1, expected 2'
  ):
    metrics.read_solutions(solutions)


def test_read_levels(tmp_path):
  path = tmp_path / 'levels.csv'
  path.write_text('task_id,level\nt1,easy\nt2,hard\n')
  assert metrics.read_levels(path) == {'t1': 'easy', 't2': 'hard'}
  path.write_text('task_id,level\nt1,easy\nt1,hard\n')
  with pytest.raises(ValueError, match='line 3: task t1 listed twice'):
    metrics.read_levels(path)
  path.write_text('id,difficulty\nt1,easy\n')
  with pytest.raises(ValueError, match='expected a header with task_id,level'):
    metrics.read_levels(path)


def test_report_json_and_markdown(tmp_path):
  sub = {'t1': [entry(A, WRONG)], 't2': [entry(WRONG, WRONG), entry(WRONG, C)]}
  details = {
      't2': [
          {'votes': [4, 1], 'found_by': [['identity'], []], 'truth_nll': 0.5},
          {'votes': [3, 2], 'found_by': [['rot90'], ['transpose', 'identity']], 'truth_nll': 0.25},
      ]
  }
  score = metrics.score_submission(sub, SOLUTIONS, LEVELS)
  json_path, md_path = metrics.write_report(tmp_path / 'r', score, details)
  data = json.loads(open(json_path).read())
  assert (data['total'], data['num_tasks'], data['num_solved']) == (1.5, 3, 1)
  assert data['by_level']['hard'] == {'num_tasks': 2, 'total': 0.5, 'mean': 0.25, 'num_solved': 0}
  t2 = next(t for t in data['tasks'] if t['task_id'] == 't2')
  assert t2['votes'] == [[4, 1], [3, 2]]
  assert t2['found_by'] == ['identity', 'transpose']  # attempt_2 of test 1 was right
  assert t2['solved_by'] == [None, 2]
  assert t2['truth_nll'] == 0.375  # the mean over its test inputs
  assert next(t for t in data['tasks'] if t['task_id'] == 't1')['truth_nll'] is None
  md = open(md_path).read()
  assert '| t2 | hard | 2 | 1 | 0.50 | 4/1, 3/2 | identity, transpose | 0.375 |' in md
  assert (
      '**pass@2 1.50 / 3 tasks (50.0%) by test input; 1 / 3 (33.3%) with every test input '
      'right.**'
  ) in md
  assert '| easy | 1 | 1.00 | 100.0% | 1 |\n| hard | 2 | 0.50 | 25.0% | 0 |' in md


def test_evaluate_files_end_to_end(tmp_path):
  sub_path, sol_path = tmp_path / 'submission.json', tmp_path / 'solutions.json'
  sub_path.write_text(json.dumps({'t1': [entry(WRONG, A)], 't2': [entry(B, B)]}))
  sol_path.write_text(json.dumps(SOLUTIONS))
  levels_path = tmp_path / 'levels.csv'
  levels_path.write_text('task_id,level\n' + ''.join(f'{t},{l}\n' for t, l in LEVELS.items()))
  score = metrics.evaluate(
      str(sub_path), str(sol_path), str(tmp_path / 'out'), levels_path=str(levels_path)
  )
  assert (score.total, score.num_solved) == (1.5, 1)
  assert json.loads((tmp_path / 'out' / 'report.json').read_text())['total'] == 1.5
  assert '| t2 | hard | 2 | 1 | 0.50 |' in (tmp_path / 'out' / 'report.md').read_text()


def test_load_solutions_from_a_selector_or_a_file(tmp_path):
  task_dir = tmp_path / 'tasks'
  task_dir.mkdir()
  train = [{'input': B, 'output': B}]
  tasks = {
      't1': {'train': train, 'test': [{'input': B, 'output': A}]},
      't2': {'train': train, 'test': [{'input': B, 'output': B}, {'input': A, 'output': C}]},
  }
  for task_id, record in tasks.items():
    (task_dir / f'{task_id}.json').write_text(json.dumps(record))
  assert metrics.load_solutions(f'dir:{task_dir}') == {'t1': [A], 't2': [B, C]}
  sol_path = tmp_path / 'solutions.json'
  sol_path.write_text(json.dumps({'t1': [A]}))
  assert metrics.load_solutions(str(sol_path)) == {'t1': [A]}
  (task_dir / 't3.json').write_text(json.dumps({'train': train, 'test': [{'input': A}]}))
  with pytest.raises(ValueError, match=r"tasks without test outputs: \['t3'\]"):
    metrics.load_solutions(f'dir:{task_dir}')


@pytest.mark.parametrize(
    'right, total, solved',
    [
        # (test inputs right per task) -> by test input (fractional) vs whole tasks
        ({'t1': [0], 't2': [0, 1], 't3': [0]}, 3.0, 3),
        ({'t1': [0], 't2': [0], 't3': []}, 1.5, 1),  # t2 half: 0.5, not solved
        ({'t2': [0], 't3': [0]}, 1.5, 1),
        ({'t2': [1]}, 0.5, 0),  # a half is no whole task
        ({}, 0.0, 0),
    ],
)
def test_both_scorings(right, total, solved):
  """The reference's arclib/eval.py both ways: `subpoints` (each test input its fraction
  of its task: the paper's 400-task unit) and all-or-nothing (its 80-task unit)."""
  sub = {
      t: [entry(g if i in right.get(t, ()) else WRONG, WRONG) for i, g in enumerate(grids)]
      for t, grids in SOLUTIONS.items()
  }
  score = metrics.score_submission(sub, SOLUTIONS)
  assert (score.total, score.num_solved) == (total, solved)
  line = metrics.summary(score)
  assert line.startswith(f'pass@2 {total:.2f} / 3 tasks ({100 * total / 3:.1f}%) by test input; ')
  assert line.endswith(f'{solved} / 3 ({100 * solved / 3:.1f}%) with every test input right')


def test_known_levels_are_the_repository_files(tmp_path):
  levels = metrics.known_levels()
  assert len(levels) == 400 and set(levels.values()) == set(metrics.LEVELS)
  assert levels['66e6c45b'] == 'easy'  # in both configs/data files
  (tmp_path / 'a_levels.csv').write_text('task_id,level\nt1,easy\n')
  (tmp_path / 'b_levels.csv').write_text('task_id,level\nt1,easy\nt2,hard\n')
  assert metrics.known_levels(str(tmp_path / '*levels.csv')) == {'t1': 'easy', 't2': 'hard'}
  (tmp_path / 'c_levels.csv').write_text('task_id,level\nt2,expert\n')
  with pytest.raises(
      ValueError, match="c_levels.csv: task t2 is 'expert', another file says 'hard'"
  ):
    metrics.known_levels(str(tmp_path / '*levels.csv'))
  assert metrics.known_levels(str(tmp_path / 'none*.csv')) == {}


def test_levels_are_ordered_by_difficulty():
  solutions = {f't{i}': [A] for i in range(5)}
  levels = {'t0': 'expert', 't1': 'medium', 't2': 'easy', 't3': 'hard', 't4': 'bonus'}
  score = metrics.score_submission({}, solutions, levels)
  assert list(score.by_level) == ['easy', 'medium', 'hard', 'expert', 'bonus']


def test_evaluate_reads_the_repository_levels_by_default(tmp_path):
  ids = {'66e6c45b': 'easy', 'e5c44e8f': 'hard', 'not-arc': None}  # levels as in configs/data
  assert all(metrics.known_levels().get(t) == level for t, level in ids.items())
  (tmp_path / 'sub.json').write_text(json.dumps({t: [entry(A, WRONG)] for t in ids}))
  (tmp_path / 'sol.json').write_text(json.dumps({t: [A] for t in ids}))
  score = metrics.evaluate(str(tmp_path / 'sub.json'), str(tmp_path / 'sol.json'), str(tmp_path))
  assert {t.task_id: t.level for t in score.tasks} == ids
  md = (tmp_path / 'report.md').read_text()
  assert '| 66e6c45b | easy | 1 | 1 | 1.00 |' in md and '| not-arc |  | 1 | 1 | 1.00 |' in md
  assert '| easy | 1 | 1.00 | 100.0% | 1 |\n| hard | 1 | 1.00 | 100.0% | 1 |' in md
