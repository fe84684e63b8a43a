"""Paired comparisons: groups of tasks, the exact sign test, the table of arms."""

import json

import pytest

from ttt_jax.eval import compare, metrics

RIGHT, WRONG = [[1]], [[2]]


def test_sign_test_is_exact_and_two_sided():
  assert compare.sign_test([0, 0, 0], [0, 0, 0]) == (0, 0, 1.0)
  # 5 wins, 0 losses: p = 2 / 2**5.
  assert compare.sign_test([0] * 6, [1] * 5 + [0]) == (5, 0, pytest.approx(0.0625))
  wins, losses, p = compare.sign_test([1, 0, 0, 1], [0, 1, 1, 1])
  assert (wins, losses) == (2, 1) and p == pytest.approx(1.0)
  with pytest.raises(ValueError, match='length'):
    compare.sign_test([0], [0, 1])


def test_groups_name_families_and_the_held_out_one():
  assert compare.group_of('gen-upscale-2x3-100002') == 'upscale'
  assert compare.group_of('gen-gravity-left-100010') == 'gravity (held-out family)'
  assert compare.group_of('0a1d4ef5') == 'ARC'


def test_compare_workdir_tables_every_arm(tmp_path):
  ids = ['gen-upscale-2x3-100002', 'gen-gravity-up-100009', 'abc']
  solutions = {i: [RIGHT] for i in ids}
  solved = {'predict_base': [], 'predict_ttt': ids[:2], 'predict_ttt_free': ids[:1]}
  for folder, right in solved.items():
    (tmp_path / folder).mkdir()
    entries = {i: [{'attempt_1': RIGHT if i in right else WRONG, 'attempt_2': WRONG}] for i in ids}
    (tmp_path / folder / 'submission.json').write_text(json.dumps(entries))
  text = compare.compare_workdir(str(tmp_path), solutions)
  lines = text.splitlines()
  assert lines[0] == '| tasks | n | no TTT | TTT | TTT, free |'
  assert lines[2:6] == [
      '| gravity (held-out family) | 1 | 0.00 (0) | 1.00 (1) | 0.00 (0) |',
      '| upscale | 1 | 0.00 (0) | 1.00 (1) | 1.00 (1) |',
      '| ARC | 1 | 0.00 (0) | 0.00 (0) | 0.00 (0) |',
      '| **all** | 3 | 0.00 (0) | 2.00 (2) | 1.00 (1) |',
  ]
  assert lines[7] == compare.LEGEND
  assert '- TTT vs no TTT: higher on 2 tasks, lower on 0, equal on 1; sign test p = 0.5' in lines
  assert '- TTT vs TTT, free: higher on 1 tasks, lower on 0, equal on 2; sign test p = 1' in lines
  with pytest.raises(ValueError, match='no predict'):
    compare.compare_workdir(str(tmp_path / 'predict_base'), solutions)


def test_group_table_scores_both_ways_and_by_level():
  # 66e6c45b easy (two test inputs, one right), e5c44e8f hard, a generated task: no level.
  solutions = {'66e6c45b': [RIGHT, RIGHT], 'e5c44e8f': [RIGHT], 'gen-upscale-2x3-100002': [RIGHT]}
  half = {'66e6c45b': [{'attempt_1': RIGHT, 'attempt_2': WRONG}] * 2}
  half['66e6c45b'][1] = {'attempt_1': WRONG, 'attempt_2': WRONG}
  levels = metrics.known_levels()
  arms = {
      'a': metrics.score_submission(half, solutions, levels),
      'b': metrics.score_submission({}, solutions, levels),
  }
  lines = compare.group_table(arms).splitlines()
  assert lines[2:7] == [
      '| upscale | 1 | 0.00 (0) | 0.00 (0) |',
      '| ARC | 2 | 0.50 (0) | 0.00 (0) |',
      '| level easy | 1 | 0.50 (0) | 0.00 (0) |',
      '| level hard | 1 | 0.00 (0) | 0.00 (0) |',
      '| **all** | 3 | 0.50 (0) | 0.00 (0) |',
  ]
