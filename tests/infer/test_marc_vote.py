"""vote.method='marc': the reference's hierarchical vote as coded, against its own output.

Golden tests/infer/golden/marc_vote.json, made by running ekinakyurek/marc @95b3348
(arclib/voting.py) outside this repository, in its own venv:
- 'random': 300 random candidate sets (2-6 distinct small grids, identity 0-9
  candidates, 0-2 per transform, some from categories the reference does not list:
  'Rotate(90)' and colour-permuted ones), each with `vote(outputs)`'s top 2. Kept only
  when free of ties: the same result under 30 random colour relabellings and
  reorderings (which reshuffle Python's set order, the reference's tie-break), and no
  two-answer tie between grids of different shapes (set order of shapes, which
  relabelling does not reshuffle). 576 sets were drawn to keep 300.
- 'tiebreak': 40 more such sets of two or three answers where the 2nd and 3rd global
  candidates were nominated equally often (the identity tie-break).
- 'majority': `row_base_majority_voting(outputs, transpose)` on constructed tie-free
  inputs, including one whose majority is none of the inputs.
Grids are written as rows of digits joined by '|'.
"""

import json
import pathlib
import random

import numpy as np
import pytest

from ttt_jax.infer import marc_vote as M
from ttt_jax.infer import prompts
from ttt_jax.infer.candidates import Candidate

GOLDEN = json.loads((pathlib.Path(__file__).parent / 'golden' / 'marc_vote.json').read_text())
# The golden's categories as our prompts' (d8, colours): a Rotate(90) query inverts by
# Rotate(270) (and the reverse); 'PermuteColors' stands for a colour-permuted prompt.
PROMPT_OF = {
    'identity': (0, prompts.IDENTITY_COLORS),
    'Transpose()': (4, prompts.IDENTITY_COLORS),
    'Flip(0)': (5, prompts.IDENTITY_COLORS),
    'Flip(1)': (7, prompts.IDENTITY_COLORS),
    'Rotate(180)': (2, prompts.IDENTITY_COLORS),
    'Rotate(270)': (1, prompts.IDENTITY_COLORS),
    'Rotate(90)': (3, prompts.IDENTITY_COLORS),
    'PermuteColors': (0, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9)),
}


def grid(text: str) -> M.Grid:
  return tuple(tuple(int(c) for c in row) for row in text.split('|'))


def _vote(candidates):
  """marc_vote.vote through our categories: golden category -> our prompt -> category."""
  categories = [M.category(*PROMPT_OF[c]) for c, _ in candidates]
  return M.vote([grid(g) for _, g in candidates], categories)


def test_categories_are_the_references():
  for name, (d8, colors) in PROMPT_OF.items():
    want = name if name in M.CATEGORIES else None
    assert M.category(d8, colors) == want, name
  assert M.category(6, prompts.IDENTITY_COLORS) is None  # anti-transpose: no such query


@pytest.mark.parametrize('kind', ['random', 'tiebreak'])
def test_top_2_equals_the_reference(kind):
  cases = GOLDEN[kind]
  assert len(cases) >= 40
  for i, case in enumerate(cases):
    first, second, _ = _vote(case['candidates'])
    assert [first, second] == [grid(g) for g in case['top2']], (kind, i)


def test_random_goldens_cover_every_part_of_the_vote():
  flags = [f for case in GOLDEN['random'] for f in case['flags']]
  # fill: some category had at most two answers; tiebreak: C2 and C3 equally nominated;
  # outside: candidates only in 'all'; no_identity: the tie-break skipped.
  for flag, at_least in (('fill', 250), ('tiebreak', 30), ('outside', 100), ('no_identity', 10)):
    assert flags.count(flag) >= at_least, flag


@pytest.mark.parametrize('case', GOLDEN['majority'], ids=lambda c: f"transpose={c['transpose']}")
def test_majority_grid_equals_the_reference(case):
  outputs = [grid(g) for g in case['outputs']]
  assert M.majority_grid(outputs, case['transpose']) == grid(case['grid'])


def test_majority_grid_can_be_no_candidate():
  a, b, c = grid('111|222|333'), grid('111|555|666'), grid('444|555|333')
  assert M.majority_grid([a, b, c]) == grid('111|555|333')  # each row's majority
  transposed = lambda g: tuple(zip(*g))
  by_columns = M.majority_grid([transposed(a), transposed(b), transposed(c)], transpose=True)
  assert by_columns == transposed(grid('111|555|333'))
  # The most common shape decides; rows of another width never count.
  d = grid('10|55|33')
  assert M.majority_grid([a, b, c, d, d]) == grid('111|555|333')
  assert M.majority_grid([a, d, d]) == d


P, Q, R, X = grid('12|34'), grid('56|78'), grid('9|9'), grid('0')


def test_a_category_with_one_answer_nominates_it_three_times():
  """A missing 2nd/3rd is filled with the majority grid, here the winner itself
  (duplicates kept): two transforms that each found Q outvote the identity prompts' P,
  which a flat count (P 3, Q 2) would pick."""
  cands = [('identity', P)] * 3 + [('identity', R), ('Transpose()', Q), ('Flip(0)', Q)]
  outputs, categories = [g for _, g in cands], [c for c, _ in cands]
  assert M.top_three([Q]) == (Q, Q, Q)
  assert M.top_three([P, P, P, R]) == (P, R, P)
  first, second, nominations = M.vote(outputs, categories)
  # all: P, Q, R; identity: P, R, P; Transpose: Q x3; Flip(0): Q x3.
  assert (first, second) == (Q, P)
  assert (nominations.count(Q), nominations.count(P), nominations.count(R)) == (7, 3, 2)


@pytest.mark.parametrize('identity_answer, other, want', [(R, P, R), (P, R, P)])
def test_equal_nominations_go_to_the_answer_the_identity_prompts_found_more(
    identity_answer, other, want
):
  """C2 and C3 nominated 4 times each: the one found by the identity prompts is attempt 2,
  whichever of them ranked 2nd first (P comes first in 'all' in both cases)."""
  cands = [('PermuteColors', P), ('identity', identity_answer), ('Rotate(180)', other)]
  cands += [('Transpose()', X), ('Flip(0)', X), ('Flip(1)', X)]
  outputs = [g for _, g in cands]
  first, second, nominations = M.vote(outputs, [M.category(*PROMPT_OF[c]) for c, _ in cands])
  assert nominations.count(P) == nominations.count(R) == 4
  assert (first, second) == (X, want)


def test_equal_identity_counts_let_c3_replace_c2_and_no_identity_skips_the_tie_break():
  """As coded: `if c2_identity_counts > c3_identity_counts: C3 = C2 else: C2 = C3`, inside
  a try whose KeyError (no identity candidate) leaves C2 as ranked. Here X wins, P and R
  are nominated 4 times each and P ranks 2nd (first occurrence)."""
  cands = [('identity', X), ('Flip(0)', X), ('Transpose()', P), ('Rotate(180)', R)]
  first, second, _ = M.vote([g for _, g in cands], [c for c, _ in cands])
  assert (first, second) == (X, R)  # neither found by the identity prompts: C3 replaces C2
  cands = [('Flip(1)', X), ('Flip(0)', X), ('Transpose()', P), ('Rotate(180)', R)]
  first, second, _ = M.vote([g for _, g in cands], [c for c, _ in cands])
  assert (first, second) == (X, P)  # no identity candidate: the tie-break is skipped


def test_attempts_are_always_candidates_with_first_occurrence_ties():
  rng = random.Random(0)
  names = list(PROMPT_OF)
  for _ in range(300):
    shapes = [(2, 2), (2, 3), (3, 2)] * 2
    pool = [tuple(tuple(rng.randrange(3) for _ in range(w)) for _ in range(h)) for h, w in shapes]
    cands = [(rng.choice(names), rng.choice(pool)) for _ in range(rng.randrange(1, 12))]
    outputs = [g for _, g in cands]
    first, second, _ = M.vote(outputs, [M.category(*PROMPT_OF[c]) for c, _ in cands])
    assert first in outputs and second in outputs


def test_vote_candidates_inverts_then_votes_and_names_the_finders():
  truth = np.array([[1, 2, 3], [4, 5, 6]])
  moved = lambda d8: prompts.transform_grid(truth, d8, prompts.IDENTITY_COLORS)
  cands = [Candidate('t', 0, d8, prompts.IDENTITY_COLORS, moved(d8), 0.0) for d8 in (0, 4, 1)]
  cands += [Candidate('t', 0, 0, prompts.IDENTITY_COLORS, np.array([[7]]), 0.0)]
  cands += [Candidate('t', 0, 5, prompts.IDENTITY_COLORS, None, 0.0)]  # malformed: ignored
  entry, details = M.vote_candidates(cands)
  assert entry == {'attempt_1': truth.tolist(), 'attempt_2': [[7]]}
  assert details['found_by'] == [['identity', 'rot90', 'transpose'], ['identity']]
  assert details['votes'] == [10, 2] and (details['num_candidates'], details['num_valid']) == (5, 4)
  entry, details = M.vote_candidates(cands[-1:])
  assert entry == {'attempt_1': [[0]], 'attempt_2': [[0]]} and details['votes'] == [0, 0]
