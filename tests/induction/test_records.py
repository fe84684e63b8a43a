"""ProgramRecord JSON round trip and the vote over correct programs."""

from ttt_jax.induction import records
from ttt_jax.induction.records import ProgramRecord

A, B, C = [[1]], [[2]], [[3, 3]]


def _record(name, train, outputs, **kwargs):
  return ProgramRecord('t', name, tuple(train), tuple(outputs), **kwargs)


def test_json_round_trip():
  record = _record('p.py', [True, False], [A, None], test_verdicts=(True, False), error='boom')
  assert ProgramRecord.from_json(record.to_json()) == record
  plain = _record('q', [True], [B])
  assert plain.to_json()['test_verdicts'] is None
  assert ProgramRecord.from_json(plain.to_json()) == plain


def test_only_correct_programs_vote_top_two_first_met_wins_ties():
  recs = [
      _record('wrong', [True, False], [A, A]),
      _record('p1', [True, True], [B, A]),
      _record('p2', [True, True], [C, None]),
      _record('p3', [True, True], [C, A]),
      _record('p4', [True, True], [A, B]),
      _record('none', [], [A, A]),  # no demonstration verdicts: never correct
  ]
  answers = records.vote(recs, num_tests=2)
  assert answers[0] == [(C, 2), (B, 1)]  # B met before A at one vote each
  assert answers[1] == [(A, 2), (B, 1)]
  assert records.answered_first_test(answers)


def test_carry_over_counts_earlier_test_inputs_as_barc_does():
  recs = [
      _record('p1', [True], [A, B]),
      _record('p2', [True], [A, B]),
      _record('p3', [True], [A, C]),
  ]
  assert records.vote(recs, 2)[1] == [(B, 2), (C, 1)]
  assert records.vote(recs, 2, carry_over=True)[1] == [(A, 3), (B, 2)]


def test_no_correct_program_answers_nothing():
  answers = records.vote([_record('p', [False], [A])], num_tests=1)
  assert answers == [[]]
  assert not records.answered_first_test(answers)
