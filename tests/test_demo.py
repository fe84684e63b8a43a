"""The demo's comparison table: per-task rows and the totals, from scores and details."""

from ttt_jax import demo
from ttt_jax.eval import metrics

RIGHT, WRONG = [[1, 2]], [[3, 3]]
SOLUTIONS = {'t1': [RIGHT], 't2': [RIGHT]}


def _score(t1_attempt):
  entry = lambda grid: [{'attempt_1': grid, 'attempt_2': WRONG}]
  return metrics.score_submission({'t1': entry(t1_attempt), 't2': entry(WRONG)}, SOLUTIONS)


def test_comparison_table_rows_and_totals():
  base, tuned = _score(WRONG), _score(RIGHT)
  counts = lambda ok: {'num_valid': ok, 'num_candidates': 10}
  base_details = {'t1': [{'truth_nll': 0.9, **counts(1)}], 't2': [{'truth_nll': 0.4, **counts(0)}]}
  tuned_details = {'t1': [{'truth_nll': 0.2, **counts(5)}], 't2': [{'truth_nll': 0.5, **counts(2)}]}
  table = demo.comparison_table(base, tuned, {'t1': (1.5, 0.25)}, base_details, tuned_details)
  lines = table.splitlines()
  assert lines[2] == '| t1 | 1.500 -> 0.250 | 0.900 -> 0.200 | 0.00 | 1.00 |'
  assert lines[3] == '| t2 | - | 0.400 -> 0.500 | 0.00 | 0.00 |'
  assert lines[4] == (
      '| **total** | | **mean 0.650 -> 0.350; lower on 1 / 2** | **0.00 / 2** ' '| **1.00 / 2** |'
  )
  assert lines[5] == '| **tasks fully solved** | | | **0 / 2** | **1 / 2** |'
  assert lines[6] == '| well-formed candidate grids | | | 1 / 20 (5.0%) | 7 / 20 (35.0%) |'
  no_details = demo.comparison_table(base, tuned, {}, {}, {})
  assert '| t2 | - | - -> - | 0.00 | 0.00 |' in no_details
  assert no_details.splitlines()[-2] == '| **total** | | **** | **0.00 / 2** | **1.00 / 2** |'


def test_comparison_table_totals_per_kind_of_task():
  solutions = {'gen-d8-6-100000': [RIGHT], 'abc': [RIGHT]}
  entry = lambda grid: [{'attempt_1': grid, 'attempt_2': WRONG}]
  base = metrics.score_submission({'gen-d8-6-100000': entry(WRONG), 'abc': entry(WRONG)}, solutions)
  tuned = metrics.score_submission(
      {'gen-d8-6-100000': entry(RIGHT), 'abc': entry(WRONG)}, solutions
  )
  lines = demo.comparison_table(base, tuned, {}, {}, {}).splitlines()
  assert lines[-2:] == [
      '| generated tasks | | | 0.00 / 1; 0 solved | 1.00 / 1; 1 solved |',
      '| ARC tasks | | | 0.00 / 1; 0 solved | 0.00 / 1; 0 solved |',
  ]


def test_comparison_table_totals_per_level_both_ways():
  solutions = {'t1': [RIGHT], 't2': [RIGHT, RIGHT], 't3': [RIGHT]}
  levels = {'t1': 'hard', 't2': 'easy', 't3': 'easy'}
  entry = lambda *grids: [{'attempt_1': g, 'attempt_2': WRONG} for g in grids]
  base = metrics.score_submission(
      {'t1': entry(WRONG), 't2': entry(RIGHT, WRONG)}, solutions, levels
  )
  tuned = metrics.score_submission(
      {'t1': entry(RIGHT), 't2': entry(RIGHT, RIGHT), 't3': entry(RIGHT)}, solutions, levels
  )
  lines = demo.comparison_table(base, tuned, {}, {}, {}).splitlines()
  assert lines[-4:] == [
      '| **total** | | **** | **0.50 / 3** | **3.00 / 3** |',
      '| **tasks fully solved** | | | **0 / 3** | **3 / 3** |',
      '| level easy | | | 0.50 / 2; 0 solved | 2.00 / 2; 2 solved |',
      '| level hard | | | 0.00 / 1; 0 solved | 1.00 / 1; 1 solved |',
  ]
