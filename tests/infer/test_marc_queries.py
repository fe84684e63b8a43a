"""prompts.recipe='marc': the reference's inference queries, against its own output.

Goldens (tests/infer/golden/, made by running ekinakyurek/marc @95b3348 outside this
repository, in its own venv, on real ARC-AGI-1 evaluation tasks):
- marc_d8.json: arclib/augmenters.py Transpose(), Flip(0), Flip(1), Rotate(90/180/270)
  applied to a real grid (task 12997ef3), and str(inverse(augmenter)) of each.
- marc_queries.json: inference/preprocess.py get_leave_n_test_task(task, n, permute_n=2)
  for n = 0, 1, 2 on every test input of six tasks (read with Task.read_tasks_from_dict(...,
  test=True), the submission mode: the test output is a copy of the input), run in 200
  processes with PYTHONHASHSEED 0..199. Per case: the identity queries' demonstration
  orders (the same in every process), the indices its rng.choice drew (recorded by a
  RandomState subclass; also the same everywhere), the number of queries, and how often
  each identity query was the base of each transform over the 200 processes (the part
  that follows Python's hash order).
"""

import json
import pathlib

import numpy as np
import pytest
from scipy import stats

from ttt_jax.data import arc, augment
from ttt_jax.data import format as fmt
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import marc_queries, prompts
from ttt_jax.infer.marc_vote import AUGMENTER_D8

GOLDEN = pathlib.Path(__file__).parent / 'golden'
# The reference's query augmenters, in the order it draws their bases.
REFERENCE_QUERIES = ('Transpose()', 'Flip(0)', 'Flip(1)', 'Rotate(90)', 'Rotate(180)')
MARC = prompts.PromptConfig(recipe='marc', leave_out=1)


def _golden(name):
  return json.loads((GOLDEN / name).read_text())


@pytest.fixture(scope='module')
def tasks():
  cases = _golden('marc_queries.json')['cases']
  loaded, _ = arc.load_tasks('arc1/eval@ids=' + ','.join(sorted({c['task'] for c in cases})))
  return {t.id: t for t in loaded}


def _inverter(d8: int) -> str:
  """The reference's name of the augmenter undoing D8 element d8."""
  return {k: name for name, k in AUGMENTER_D8.items()}[int(augment.D8_INVERSE[d8])]


def test_reference_augmenters_are_these_d8_elements():
  golden = _golden('marc_d8.json')
  grid = np.array(golden['grid'])
  images = {augment.numpy_d8(grid, k).tobytes() + bytes(k >= 4) for k in range(8)}
  assert len(images) == 8  # an asymmetric grid: each D8 element moves it differently
  for name, want in golden['augmenters'].items():
    k = AUGMENTER_D8[name]
    np.testing.assert_array_equal(augment.numpy_d8(grid, k), want['grid'], err_msg=name)
    np.testing.assert_array_equal(
        prompts.transform_grid(grid, k, prompts.IDENTITY_COLORS), want['grid']
    )
    assert AUGMENTER_D8[want['inverse']] == augment.D8_INVERSE[k]
  # Our paper transforms are the reference's queries, in its order.
  assert prompts.PAPER_D8 == (0, *(AUGMENTER_D8[name] for name in REFERENCE_QUERIES))


@pytest.mark.parametrize(
    'case',
    _golden('marc_queries.json')['cases'],
    ids=lambda c: f"{c['task']}-{c['test']}-n{c['n']}",
)
def test_queries_equal_the_reference_where_it_is_deterministic(tasks, case):
  task = tasks[case['task']]
  got = marc_queries.queries(task, case['test'], case['n'], 2, prompts.PAPER_D8, seed=0)
  identity = [q.demos for q in got if q.d8 == 0]
  assert sorted(map(list, identity)) == case['identity']
  assert len(got) == case['num_queries']
  # Which transforms were kept (a task symmetric under one drops it) ...
  transformed = {_inverter(q.d8): q.demos for q in got if q.d8 != 0}
  assert sorted(transformed) == sorted(case['transformed_bases'])
  # ... and each one's base: the reference's RandomState drew the same index, which we
  # read in our identity order (it in its hash order).
  for name, index in zip(REFERENCE_QUERIES, case['choices']):
    inverter = _inverter(AUGMENTER_D8[name])
    if inverter in transformed:
      assert transformed[inverter] == identity[index]
    bases = case['transformed_bases'].get(inverter, {})
    assert all(tuple(map(int, filter(None, b.split(',')))) in identity for b in bases)


def test_transform_bases_follow_the_reference_law():
  """Under 200 hash seeds the reference's base of each transform is uniform over the
  identity queries (one chi-square over every case and transform); ours is uniform over
  seeds of its RandomState (it indexes the same list with the same draw)."""
  chi2, dof = 0.0, 0
  for case in _golden('marc_queries.json')['cases']:
    k = len(case['identity'])
    for counts in case['transformed_bases'].values():
      observed = np.array([counts.get(','.join(map(str, o)), 0) for o in case['identity']])
      chi2 += np.sum((observed - observed.mean()) ** 2 / observed.mean())
      dof += k - 1
  assert dof > 50 and stats.chi2.sf(chi2, dof) > 1e-3

  task = arc.load_tasks('arc1/eval@ids=009d5c81')[0][0]
  positions = []
  for seed in range(200):
    got = marc_queries.queries(task, 0, 1, 2, prompts.PAPER_D8, seed)
    identity = [q.demos for q in got if q.d8 == 0]
    positions += [(identity.index(q.demos) + 0.5) / len(identity) for q in got if q.d8 != 0]
  # Each base's position in the list, as a fraction, spreads evenly over [0, 1).
  assert stats.kstest(positions, 'uniform').pvalue > 1e-3


def test_marc_variants_are_the_queries_encoded(tasks):
  task = tasks['fc754716']
  variants = prompts.input_variants(task, 0, MARC)
  plan = marc_queries.queries(task, 0, 1, MARC.orders, MARC.d8, MARC.seed)
  assert [(v.d8, v.demos) for v in variants] == plan
  for v in variants:
    assert v.colors == prompts.IDENTITY_COLORS
    pairs = [
        tuple(prompts.transform_grid(g, v.d8, v.colors) for g in task.train[i]) for i in v.demos
    ]
    x = prompts.transform_grid(task.test[0].input, v.d8, v.colors)
    np.testing.assert_array_equal(v.tokens, fmt.encode_task(pairs, x)[0])
  # fc754716 is symmetric under both flips and rot180: only transpose and rot90 queries.
  assert sorted({v.d8 for v in variants}) == [0, 1, 4]


def _fit_length(task, query) -> int:
  """What the marc recipe checks against max_len: the prompt plus an answer the size of
  the (transformed) test input."""
  move = lambda g: prompts.transform_grid(g, query.d8, prompts.IDENTITY_COLORS)
  x = move(task.test[0].input)
  tokens, _ = fmt.encode_task(
      [(move(task.train[i].input), move(task.train[i].output)) for i in query.demos], x
  )
  return len(tokens) + COMPACT.answer_tokens(x.shape)


def test_leave_two_out_joins_when_no_leave_one_out_query_fits(tasks):
  task = tasks['009d5c81']
  plan = lambda n: marc_queries.queries(task, 0, n, 2, prompts.PAPER_D8, 0)
  marc = lambda max_len: prompts.PromptConfig(recipe='marc', leave_out=1, max_len=max_len)
  shortest = min(_fit_length(task, q) for q in plan(1))
  # Everything fits: leave-one-out only.
  assert [(v.d8, v.demos) for v in prompts.input_variants(task, 0, MARC)] == plan(1)
  # The limit is strict (`total_tokens < max_tokens`, get_preprocessed_tasks_single): at
  # the shortest leave-one-out length none fits, and the leave-two-out queries that do come.
  got = prompts.input_variants(task, 0, marc(shortest))
  want = [q for q in plan(2) if _fit_length(task, q) < shortest]
  assert want and [(v.d8, v.demos) for v in got] == want
  # One token more: the shortest leave-one-out queries fit, and only they come.
  got = prompts.input_variants(task, 0, marc(shortest + 1))
  want = [q for q in plan(1) if _fit_length(task, q) == shortest]
  assert want and [(v.d8, v.demos) for v in got] == want
  # Nothing fits even leaving two out: no variants (the reference marks the task invalid,
  # and submits [[0]] twice, as we do for a test input without candidates).
  assert prompts.input_variants(task, 0, marc(20)) == []


def test_marc_recipe_config_errors():
  with pytest.raises(ValueError, match='recipe'):
    prompts.PromptConfig(recipe='paper')
  with pytest.raises(ValueError, match='color_perms=0 and 0 in d8'):
    prompts.PromptConfig(recipe='marc', color_perms=1)
  with pytest.raises(ValueError, match='color_perms=0 and 0 in d8'):
    prompts.PromptConfig(recipe='marc', d8=(4, 5))
