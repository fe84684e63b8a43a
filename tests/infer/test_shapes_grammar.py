"""Shape hypotheses on constructed tasks, and the grid grammar: every decoder emits only
well-formed grids, of the target shape when one is given."""

import jax
import numpy as np
import pytest

from ttt_jax.data import format as fmt
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import decode, shapes
from ttt_jax.infer import grammar as G
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig


@pytest.mark.parametrize(
    'demos, test, want',
    [
        ([((3, 4), (3, 4)), ((5, 2), (5, 2))], (7, 6), (7, 6)),  # same as the input
        ([((3, 4), (2, 2)), ((5, 2), (2, 2))], (7, 6), (2, 2)),  # constant
        ([((3, 4), (4, 3)), ((5, 2), (2, 5))], (7, 6), (6, 7)),  # transposed
        ([((3, 4), (6, 12)), ((5, 2), (10, 6))], (4, 3), (8, 9)),  # times 2 and 3
        ([((6, 9), (2, 3)), ((3, 6), (1, 2))], (9, 3), (3, 1)),  # divided by 3
        ([((3, 4), (5, 4)), ((5, 2), (7, 2))], (7, 6), (9, 6)),  # rows + 2
        ([((3, 4), (3, 1)), ((5, 2), (5, 1))], (7, 6), (7, 1)),  # a column
    ],
)
def test_hypotheses_follow_the_demonstrations(demos, test, want):
  got = shapes.hypotheses(demos, test)
  assert got[0] == want and len(got) <= shapes.MAX_HYPOTHESES


def test_no_rule_falls_back_to_the_input_shape_and_sides_stay_within_30():
  assert shapes.hypotheses([((3, 4), (2, 9)), ((5, 2), (7, 1))], (6, 8)) == [(6, 8)]
  assert all(max(s) <= 30 for s in shapes.hypotheses([((2, 2), (30, 30))], (3, 3)))
  assert shapes.hypotheses([((10, 10), (30, 30))], (11, 11))[0] != (33, 33)


@pytest.mark.parametrize('decoder', ['greedy', 'sample', 'dfs'])
def test_the_grammar_only_emits_well_formed_grids(decoder):
  config = ModelConfig.preset('tiny')
  params = llama.init_params(config, jax.random.key(0), std=0.5)  # a noisy, random model
  rng = np.random.default_rng(0)
  prompts = [np.concatenate([[fmt.BOS, fmt.INPUT], rng.integers(0, 16, n), [fmt.OUTPUT]])
             for n in (3, 9, 20, 5)]  # fmt: skip
  tokens, lengths = decode.pad_prompts([p.astype(np.int32) for p in prompts], length_multiple=32)
  targets = np.array([[2, 3], [0, 0], [1, 5], [4, 1]], np.int32)
  # The free row may write up to 30 x 30: its budget must hold that.
  budget = np.array([COMPACT.answer_tokens(t if t[0] else (30, 30)) for t in targets], np.int32)
  kwargs = dict(
      grammar=G.GridGrammar(),
      target_shape_B2=targets,
      max_new_B=budget,
      max_new_tokens=int(budget.max()),
  )
  if decoder == 'dfs':
    out = decode.dfs(params, config, tokens, lengths, threshold=0.02, **kwargs)
    rows = [(b, out.tokens_BKN[b, k]) for b in range(4) for k in np.flatnonzero(out.found_BK[b])]
    assert len(rows) >= 4
  else:
    sampler = decode.Greedy() if decoder == 'greedy' else decode.Sampling(temperature=3.0)
    out = decode.generate(params, config, tokens, lengths, sampler=sampler, **kwargs)
    rows = list(enumerate(out.tokens_BN))
  for b, row in rows:
    grid = COMPACT.parse_answer(np.asarray(row))
    assert grid is not None, (b, row)
    if targets[b, 0]:
      assert grid.shape == tuple(targets[b])
  # Without the grammar this model writes malformed answers.
  free = decode.generate(params, config, tokens, lengths, max_new_tokens=64)
  assert any(COMPACT.parse_answer(np.asarray(r)) is None for r in free.tokens_BN)
