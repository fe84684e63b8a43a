"""recipe='marc': the reference's TTT data on real ARC tasks, no_transform, determinism,
oversized grids, the token limit, the config switch.

Golden: tests/data/goldens/marc_ttt_data.json, made by running ekinakyurek/marc @95b3348
(numpy 2.4.6, Python 3.11, PYTHONHASHSEED=0) outside this repository: ttt/preprocess.py
process_task(task, augmenters, ..., permute_n=1, Nmax=250, seed=0) with
augmenters = get_augmenters() (transform) or [] (--no_transform), on the demonstrations
of ARC-AGI-1 evaluation tasks 8719f442 (3 demos: the leave-two-out top-up) and 3d31c5b3
(6 demos: the cap's shuffle). A stand-in formatter and tokenizer gave every example one
token (nothing over the limit). Recorded, per get_test_time_train_data call (leave_n 1
and 2), by wrapping the reference's functions: `order_a`, the tasks in the order they
reached PermuteColors (or PermuteExamples with no transform), i.e. the deduplicated
union of augmented and untransformed tasks in the set's order; `copies`, what
PermuteExamples returned for each (colours and demonstrations permuted); `order_b`,
the function's result (copies and originals, deduplicated, in the set's order); and
`final`, process_task's result. A task is named by the first 12 hex digits of the SHA-1
of json.dumps([[input, output] for each demonstration] + [[test input, test output]]).
Lists of 3d31c5b3's leave-two-out data are stored as counts (unused under the cap).

The reference's set order is its only randomness we do not reproduce (it changes with
PYTHONHASHSEED): given its order, the colour draws, the union and the selection must
match exactly; without it, the sets and counts.
"""

import dataclasses
import functools
import hashlib
import json
import pathlib

import numpy as np
import pytest

from tests.data.test_ttt_data import parse_sequence
from ttt_jax.data import arc
from ttt_jax.data import marc_ttt_data as M
from ttt_jax.data.arc import Pair, Task
from ttt_jax.data.marc_augmenters import AUGMENTERS
from ttt_jax.data.ttt_data import TTTDataConfig, TTTDataStats, build_ttt_examples
from ttt_jax.dataclass_config import from_config_dict, to_config_dict
from ttt_jax.errors import UserError
from ttt_jax.formats.compact import COMPACT

GOLDEN = json.loads((pathlib.Path(__file__).parent / 'goldens/marc_ttt_data.json').read_text())
CASES = [
    pytest.param(g, id=f"{g['task']}-{'transform' if g['transform'] else 'none'}") for g in GOLDEN
]
LEAVES = ((1, 'leave_one_out'), (2, 'leave_two_out'))


def digest(pairs) -> str:
  items = [[p.input.tolist(), p.output.tolist()] for p in pairs]
  return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:12]


@functools.cache
def arc_task(task_id: str) -> Task:
  return arc.load_tasks(f'arc1/eval@ids={task_id}')[0][0]


@functools.cache
def demonstrations(task_id: str, seed: int, transform: bool) -> M.Demonstrations:
  return M.Demonstrations.of(arc_task(task_id).train, seed, transform)


def by_digest(demos, candidates) -> dict:
  return {digest(demos.pairs(c)): c for c in candidates}


@pytest.mark.parametrize('g', CASES)
def test_tasks_before_colours_are_the_references(g):
  demos = demonstrations(g['task'], g['seed'], g['transform'])
  for leave, name in LEAVES:
    tasks, counts = M.augmented_tasks(demos, leave)
    ref = g[name]['order_a']
    if isinstance(ref, int):  # stored as a count
      assert len(tasks) == ref
      continue
    assert sorted(by_digest(demos, tasks)) == sorted(ref) and len(tasks) == len(ref)
    n = len(arc_task(g['task']).train)
    formed = (1 + len(AUGMENTERS) * g['transform']) * n * (1 if leave == 1 else n - 1)
    assert counts == dict(candidates=formed, duplicates=formed - len(ref), too_large=0)


@pytest.mark.parametrize('g', CASES)
def test_given_the_references_order_copies_union_and_selection_are_exact(g):
  demos = demonstrations(g['task'], g['seed'], g['transform'])
  examples = {}
  for leave, name in LEAVES:
    ref = g[name]
    if isinstance(ref['order_a'], int):
      continue
    originals = by_digest(demos, M.augmented_tasks(demos, leave)[0])
    ordered = [originals[d] for d in ref['order_a']]
    copies = M.permuted_copies(demos, ordered, np.random.RandomState(g['seed']), g['transform'])
    assert [digest(demos.pairs(c)) for c in copies] == ref['copies']  # colour + order draws
    union = M.unique(demos, copies + ordered)
    assert len(union) == len(ref['order_b'])  # the dedupe
    assert sorted(by_digest(demos, union)) == sorted(ref['order_b'])
    examples[leave] = ref['order_b']  # the reference's set order

  def leave_two_out():
    if 2 not in examples:
      raise AssertionError('the leave-two-out data were not needed')
    return iter(examples[2])

  assert M.select(examples[1], leave_two_out, 250, g['seed']) == g['final']


def test_top_up_and_cap_happen_in_the_goldens():
  top_up, cap = GOLDEN[0], GOLDEN[1]
  assert len(top_up['leave_one_out']['order_b']) == 108 and len(top_up['final']) == 250
  assert top_up['final'][:108] == top_up['leave_one_out']['order_b']
  assert len(cap['leave_one_out']['order_b']) == 288 and len(cap['final']) == 250
  assert cap['final'] != cap['leave_one_out']['order_b'][:250]  # shuffled, then cut


@pytest.mark.parametrize('g', CASES)
def test_our_builder_matches_the_references_counts_and_originals(g):
  """Our own (seeded) order: counts exact; every untransformed-colour task of the reference
  is ours; every other example a colour + order copy of one of its tasks."""
  task = arc_task(g['task'])
  demos = demonstrations(g['task'], g['seed'], g['transform'])
  kept, counts = M.build_marc_examples(
      task, g['seed'], COMPACT, max_examples=250, seq_len=8192, loss='all_but_first',
      no_transform=not g['transform'],
  )  # fmt: skip
  assert len(kept) == len(g['final'])
  l1o, _ = M.ttt_tasks(demos, 1, g['seed'], g['transform'])
  assert len(l1o) == len(g['leave_one_out']['order_b'])
  assert counts.used_leave_two_out == (len(l1o) < 250)
  originals = set(g['leave_one_out']['order_a'])
  assert originals <= {digest(demos.pairs(c)) for c in l1o}
  for c in l1o:
    base = c._replace(colors=None, pairs=tuple(sorted(c.pairs[:-1])) + c.pairs[-1:])
    assert digest(demos.pairs(base)) in originals
    if c.colors is not None:  # 0 kept; used colours go to distinct unused ones while any is left
      used = set(np.unique(demos.content(base)).tolist()) - {-1, 0}
      new = {c.colors[color] for color in used}
      assert c.colors[0] == 0 and len(new) == len(used) and 0 not in new
      assert not new & used if 2 * len(used) <= 9 else new == used


@pytest.mark.parametrize('task_id', ['8719f442', '3d31c5b3'])
def test_no_transform_data_hold_no_transformed_grid(task_id):
  task = arc_task(task_id)
  cfg = TTTDataConfig(recipe='marc', no_transform=True)
  examples, stats = build_ttt_examples(task, cfg, seed=0)
  originals = {(x.tobytes(), x.shape, y.tobytes(), y.shape) for x, y in task.train}
  for tokens, _ in examples:
    pairs = parse_sequence(tokens)
    assert all((x.tobytes(), x.shape, y.tobytes(), y.shape) in originals for x, y in pairs)
  assert stats.num_too_large == 0 and stats.num_examples == len(examples)
  golden = next(g for g in GOLDEN if g['task'] == task_id and not g['transform'])
  assert len(examples) == len(golden['final'])


def test_same_seed_same_data_other_seed_other_data():
  task = arc_task('8719f442')
  cfg = TTTDataConfig(recipe='marc', max_examples=40, seq_len=2048)
  a, sa = build_ttt_examples(task, cfg, seed=3)
  b, sb = build_ttt_examples(task, cfg, seed=3)
  c, _ = build_ttt_examples(task, cfg, seed=4)
  assert sa == sb and isinstance(sa, TTTDataStats) and len(a) == 40
  assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
  assert [x[0].tobytes() for x in a] != [x[0].tobytes() for x in c]


def test_grids_that_grow_past_30_are_dropped_not_a_crash():
  rng = np.random.default_rng(0)
  grid = lambda side: rng.integers(0, 10, (side, side)).astype(np.int8)
  # 20x20 grids survive only the augmenters that keep sides (3 rotations, 2 flips,
  # the translation, the transpose); a 30x30 grid is fine as it is.
  task = Task('big', (Pair(grid(20), grid(20)), Pair(grid(30), grid(3))), (), 'memory')
  demos = M.Demonstrations.of(task.train, seed=0)
  keep_sides = [
      name.startswith(('Rotate', 'Flip', 'RandomTranslate', 'Transpose')) for name, _ in AUGMENTERS
  ]
  np.testing.assert_array_equal(demos.fits[1:].all(axis=1), keep_sides)
  tasks, counts = M.augmented_tasks(demos, 1)
  assert counts['too_large'] == 2 * (len(AUGMENTERS) - sum(keep_sides))
  assert {c.version for c in tasks} == {0} | {1 + a for a, keep in enumerate(keep_sides) if keep}
  examples, stats = build_ttt_examples(task, TTTDataConfig(recipe='marc'), seed=0)
  assert stats.num_too_large >= counts['too_large'] and len(examples) == stats.num_examples > 0
  for tokens, _ in examples:
    assert all(max(g.shape) <= 30 for pair in parse_sequence(tokens) for g in pair)


def test_token_limit_is_strict_and_leave_two_out_fills_in():
  task = arc_task('8719f442')
  cfg = TTTDataConfig(recipe='marc', no_transform=True)
  full, _ = build_ttt_examples(task, cfg, seed=0)
  longest = max(len(t) for t, _ in full)  # the leave-one-out examples (two demos each)
  kept, stats = build_ttt_examples(task, dataclasses.replace(cfg, seq_len=longest), 0)
  assert all(len(t) < longest for t, _ in kept)  # the reference keeps fewer than the limit
  assert stats.num_too_long > 0 and stats.used_leave_two_out and len(kept) > 0
  assert all(len(parse_sequence(t)) == 2 for t, _ in kept)  # leave-two-out: 1 demo + test


def test_the_config_switch_and_its_errors():
  config = to_config_dict(TTTDataConfig())
  config.recipe, config.no_transform = 'marc', True
  assert from_config_dict(TTTDataConfig, config, where='config.data').recipe == 'marc'
  config.recipe = 'nope'
  with pytest.raises(UserError, match=r'^--config\.data\.recipe: '):
    from_config_dict(TTTDataConfig, config, where='config.data')
  config.recipe = 'ttt_jax'
  with pytest.raises(UserError, match=r'^--config\.data\.no_transform: '):
    from_config_dict(TTTDataConfig, config, where='config.data')
  config.recipe, config.no_transform, config.mode = 'marc', False, 'direct_io'
  with pytest.raises(UserError, match=r"^--config\.data\.mode: mode='direct_io' is a mode of"):
    from_config_dict(TTTDataConfig, config, where='config.data')
