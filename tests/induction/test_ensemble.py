"""The ensemble of induction and TTT on constructed cases: which side answers each task,
both scorings, the oracle, the lone-answer fill; launch.ensemble's run end to end with
hand-written ProgramRecords (as the execution half writes them) and a predict run."""

import importlib
import json

import numpy as np
import pytest

from ttt_jax.data.arc import Pair, Task
from ttt_jax.errors import UserError
from ttt_jax.induction import ensemble
from ttt_jax.induction.records import ProgramRecord

X, Y, Z, W = [[1]], [[2]], [[3]], [[4]]


def _task(task_id, outputs):
  grid = lambda g: np.asarray(g, np.int8)
  return Task(
      task_id, (Pair(grid([[0]]), grid([[0]])),), tuple(Pair(grid([[0]]), grid(o)) for o in outputs)
  )


def _program(task_id, name, correct, outputs):
  return ProgramRecord(task_id, name, (correct,), tuple(outputs))


def _entry(a, b):
  return {'attempt_1': a, 'attempt_2': b}


# a: induction right, TTT wrong. b: no correct program, TTT half right. c: correct programs
# answer only test input 0. d: one induction answer (wrong), TTT's first attempt right.
# e: induction wrong, TTT right.
TASKS = [_task('a', [X]), _task('b', [X, Y]), _task('c', [X, Y]), _task('d', [X]), _task('e', [Y])]
RECORDS = {
    'a': [
        _program('a', 'p1', True, [X]),
        _program('a', 'p2', True, [X]),
        _program('a', 'p3', True, [Z]),
    ],
    'b': [_program('b', 'wrong', False, [X, Y])],
    'c': [_program('c', 'p1', True, [X, None]), _program('c', 'p2', True, [X, None])],
    'd': [_program('d', 'p1', True, [Z])],
    'e': [_program('e', 'p1', True, [Z]), _program('e', 'p2', True, [W])],
}
TTT = {
    'a': [_entry(Z, W)],
    'b': [_entry(X, Z), _entry(Z, W)],
    'c': [_entry(Z, W), _entry(Y, Z)],
    'd': [_entry(X, W)],
    'e': [_entry(Y, Z)],
}
SOLUTIONS = {t.id: [p.output.tolist() for p in t.test] for t in TASKS}


def _run(**config):
  return ensemble.ensemble(TASKS, RECORDS, TTT, ensemble.EnsembleConfig(**config))


def test_induction_answers_a_task_iff_a_correct_program_answered_its_first_test_input():
  result = _run()
  sides = {t: c.side for t, c in result.choices.items()}
  assert sides == {
      'a': 'induction', 'b': 'transduction', 'c': 'induction', 'd': 'induction', 'e': 'induction'
  }  # fmt: skip
  assert result.choices['a'].num_correct == 3 and result.choices['b'].num_correct == 0
  assert result.choices['a'].votes == ((2, 1),)
  assert result.submission['a'] == [_entry(X, Z)]
  assert result.submission['b'] == TTT['b']
  # c: no induction answer for test input 1, so TTT's attempts answer it.
  assert result.submission['c'] == [_entry(X, TTT['c'][0]['attempt_1']), TTT['c'][1]]
  assert set(result.induction) == {'a', 'c', 'd', 'e'}  # induction alone: the tasks it answers


def test_a_lone_answer_takes_ttts_first_attempt_or_repeats():
  assert _run().submission['d'] == [_entry(Z, X)]
  assert _run(second_attempt='repeat').submission['d'] == [_entry(Z, Z)]
  # TTT's first attempt equal to induction's answer: its second one.
  same = ensemble.ensemble(TASKS[3:4], RECORDS, {'d': [_entry(Z, W)]}, ensemble.EnsembleConfig())
  assert same.submission['d'] == [_entry(Z, W)]


def test_carry_over_votes_test_input_1_with_input_0s_outputs_as_barc_did():
  result = _run(carry_over=True)
  assert result.choices['c'].votes == ((2,), (2,))
  assert result.submission['c'] == [_entry(X, TTT['c'][0]['attempt_1']), _entry(X, Y)]


def test_report_scores_every_side_both_ways_and_the_oracle():
  data = ensemble.report(_run(), TTT, SOLUTIONS)
  rows = {t['task_id']: t for t in data['tasks']}
  assert {t: (r['induction'], r['transduction'], r['ensemble']) for t, r in rows.items()} == {
      'a': (1.0, 0.0, 1.0),
      'b': (0.0, 0.5, 0.5),
      'c': (0.5, 0.5, 1.0),  # induction test 0 + TTT test 1
      'd': (0.0, 1.0, 1.0),  # the lone answer paired with TTT's first attempt
      'e': (0.0, 1.0, 0.0),  # BARC's rule picks induction: the oracle would not
  }
  totals = data['totals']
  assert (totals['induction']['total'], totals['induction']['num_solved']) == (1.5, 1)
  assert (totals['transduction']['total'], totals['transduction']['num_solved']) == (3.0, 2)
  assert (totals['ensemble']['total'], totals['ensemble']['num_solved']) == (3.5, 3)
  assert (totals['oracle']['total'], totals['oracle']['num_solved']) == (4.0, 3)
  assert totals['ensemble']['mean'] == 3.5 / 5
  assert data['answered_by'] == {'induction': 4, 'transduction': 1}
  barc = ensemble.report(_run(carry_over=True, second_attempt='repeat'), TTT, SOLUTIONS)
  assert barc['totals']['ensemble']['total'] == 1 + 0.5 + 0.5 + 0 + 0
  markdown = ensemble.report_markdown(data)
  assert '| **ensemble** | 3.50 / 5 (70.00%) | 3 / 5 |' in markdown
  assert '| oracle (the better side per task) | 4.00 / 5 (80.00%) | 3 / 5 |' in markdown


def _config(name, arg=''):
  return importlib.import_module(name).get_config(arg)


def test_run_from_records_and_a_predict_run(tmp_path):
  from ttt_jax.data import arc  # pylint: disable=import-outside-toplevel

  arc.save_task_dir(TASKS, tmp_path / 'tasks')
  with open(tmp_path / 'records.jsonl', 'w') as f:
    for records in RECORDS.values():
      f.writelines(json.dumps(r.to_json()) + '\n' for r in records)
    f.write('{"task_id": "a"}\n')  # a record missing fields: skipped
  (tmp_path / 'predict').mkdir()
  (tmp_path / 'predict' / 'submission.json').write_text(json.dumps(TTT))
  c = _config('configs.ensemble')
  c.selector = f'dir:{tmp_path / "tasks"}'
  c.ttt, c.induction = str(tmp_path / 'predict'), str(tmp_path / 'records.jsonl')
  data = ensemble.run_ensemble(ensemble.EnsembleRun.from_config(c), str(tmp_path / 'out'))
  assert data['totals']['ensemble']['total'] == 3.5
  saved = json.loads((tmp_path / 'out' / 'submission.json').read_text())
  assert saved == _run().submission
  choices = json.loads((tmp_path / 'out' / 'choices.json').read_text())
  assert choices['b']['side'] == 'transduction'
  assert (tmp_path / 'out' / 'report.md').read_text() == ensemble.report_markdown(data)

  # A predict run missing a task is an error naming the flag, the file and the task.
  partial = {k: v for k, v in TTT.items() if k != 'e'}
  (tmp_path / 'predict' / 'submission.json').write_text(json.dumps(partial))
  with pytest.raises(
      UserError, match=r"^--config\.ttt: .*submission\.json has no prediction of tasks \['e'\]"
  ):
    ensemble.run_ensemble(ensemble.EnsembleRun.from_config(c), str(tmp_path / 'out2'))


def test_configs_demand_their_inputs():
  c = _config('configs.ensemble')
  with pytest.raises(UserError, match=r'^--config\.ttt: '):
    ensemble.EnsembleRun.from_config(c)
  c.ttt = '/runs/predict'
  with pytest.raises(UserError, match=r'^--config\.induction: .* one of the two'):
    ensemble.EnsembleRun.from_config(c)
  c.released = 'hf:barc0/induction_samples_with_execution_results'
  assert ensemble.EnsembleRun.from_config(c).ensemble == ensemble.EnsembleConfig()
  barc = _config('configs.reproduce.barc_induction_8b', 'ensemble')
  barc.ttt, barc.released = '/runs/predict', '/dl/released'
  run = ensemble.EnsembleRun.from_config(barc)
  assert run.ensemble == ensemble.EnsembleConfig(carry_over=True, second_attempt='repeat')
  assert run.released_samples == 20_000 and run.selector == 'arc1/eval'
  barc.ensemble.second_attempt = 'both'
  with pytest.raises(UserError, match=r'^--config\.ensemble\.second_attempt: '):
    ensemble.EnsembleRun.from_config(barc)
