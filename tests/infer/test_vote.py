"""Voting over inverted candidates: classes, tie-breaks, hierarchy, jit/vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data import augment
from ttt_jax.infer import vote as V

A = [[1, 2, 3], [4, 5, 6]]
B = [[7]]
C = [[0, 0], [0, 1]]
D = [[3, 3]]
E = [[3], [3]]  # D's cells in another shape: a different answer
FLAT = V.VoteConfig(method='flat')
HIER = V.VoteConfig(method='hierarchical')


def candidates(grids, valid=None, identity=None, group=None):
  """Pads a list of grids -> the arrays `vote` takes (defaults: all valid)."""
  padded, shapes = zip(*(augment.pad_grid(np.array(g)) for g in grids))
  n = len(grids)
  as_array = lambda x, default, dtype: jnp.asarray(default if x is None else x, dtype)
  return dict(
      grids_CHW=jnp.stack(padded),
      shapes_C2=jnp.stack(shapes),
      valid_C=as_array(valid, [True] * n, bool),
      preferred_C=as_array(identity, [False] * n, bool),
      group_C=as_array(group, list(range(n)), jnp.int32),
  )


def chosen(attempts, grids):
  """The attempts as python grids (None where missing)."""
  return [None if i == V.MISSING else grids[i] for i in np.asarray(attempts.index).tolist()]


def test_flat_vote_counts_identical_grids():
  grids = [B, A, A, B, A, C]
  out = V.vote(**candidates(grids), config=FLAT)
  assert chosen(out, grids) == [A, B]
  assert out.index.tolist() == [1, 0]  # the first candidate of each class
  assert out.votes.tolist() == [3, 2]
  assert out.members.tolist() == [
      [False, True, True, False, True, False],
      [True, False, False, True, False, False],
  ]


def test_tie_goes_to_identity_transform_then_earliest():
  grids = [A, A, B, B, C, C]
  assert chosen(V.vote(**candidates(grids), config=FLAT), grids) == [A, B]
  # B found once under the identity transform: B wins the tie with A.
  identity = [False, False, False, True, False, False]
  out = V.vote(**candidates(grids, identity=identity), config=FLAT)
  assert chosen(out, grids) == [B, A]
  assert out.votes.tolist() == [2, 2]


def test_shape_is_part_of_the_answer():
  grids = [D, E, E]
  out = V.vote(**candidates(grids), config=FLAT)
  assert chosen(out, grids) == [E, D]
  assert out.votes.tolist() == [2, 1]


def test_invalid_candidates_are_ignored():
  grids = [A, A, A, B, C]
  out = V.vote(
      **candidates(
          grids, valid=[False, False, False, True, True], identity=[True, True, True, False, False]
      ),
      config=FLAT,
  )
  assert chosen(out, grids) == [B, C]
  assert out.votes.tolist() == [1, 1]
  assert not np.asarray(out.members)[:, :3].any()


@pytest.mark.parametrize('config', [FLAT, HIER])
def test_one_distinct_candidate_leaves_attempt_2_missing(config):
  grids = [C, C, A]
  out = V.vote(**candidates(grids, valid=[True, True, False], group=[0, 1, 1]), config=config)
  assert out.index.tolist() == [0, V.MISSING]
  assert out.votes.tolist() == [2, 0]
  assert not np.asarray(out.members)[1].any()
  g = candidates(grids)
  entries = V.to_submission(
      g['grids_CHW'][None], g['shapes_C2'][None], jax.tree.map(lambda x: x[None], out)
  )
  assert entries == [{'attempt_1': C, 'attempt_2': C}]  # attempt_2 repeats attempt_1


@pytest.mark.parametrize('config', [FLAT, HIER])
def test_no_valid_candidate_gives_two_missing_attempts(config):
  grids = [A, B]
  out = V.vote(**candidates(grids, valid=[False, False]), config=config)
  assert out.index.tolist() == [V.MISSING, V.MISSING]
  assert out.votes.tolist() == [0, 0]
  g = candidates(grids)
  entries = V.to_submission(
      g['grids_CHW'][None], g['shapes_C2'][None], jax.tree.map(lambda x: x[None], out)
  )
  assert entries == [{'attempt_1': V.EMPTY_GRID, 'attempt_2': V.EMPTY_GRID}]


def test_hierarchical_and_flat_pick_different_winners():
  # One transform keeps producing A; B and C are found under three transforms each.
  grids = [A] * 6 + [B, C, B, C, B, C, D]
  group = [0] * 6 + [1, 1, 2, 2, 3, 3, 3]
  flat = V.vote(**candidates(grids, group=group), config=FLAT)
  hier = V.vote(**candidates(grids, group=group), config=HIER)
  assert chosen(flat, grids) == [A, B] and flat.votes.tolist() == [6, 3]
  # Each group votes once per class in its top 3: B and C get 3, A and D 1.
  assert chosen(hier, grids) == [B, C] and hier.votes.tolist() == [3, 3]


def test_hierarchical_keeps_only_each_groups_top_k():
  # Group 0: A x3, B x2, C x2, D x1 -> top 3 = A, B, C; D is not voted for there.
  # Group 1: D, E. With top 3, D has 1 vote, like E; with top 1 only A and D vote.
  grids = [A, A, A, B, B, C, C, D, D, E]
  group = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
  votes = lambda config: V.vote(**candidates(grids, group=group), config=config)
  top3 = votes(HIER)
  assert chosen(top3, grids) == [A, B] and top3.votes.tolist() == [1, 1]
  top1 = votes(V.VoteConfig(group_top_k=1))
  assert chosen(top1, grids) == [A, D] and top1.votes.tolist() == [1, 1]
  # The class identity tie-break also decides inside a group: E beats D there.
  identity = [False] * 9 + [True]
  top1_e = V.vote(
      **candidates(grids, group=group, identity=identity), config=V.VoteConfig(group_top_k=1)
  )
  assert chosen(top1_e, grids) == [E, A]


def test_equality_matrix_matches_a_plain_comparison():
  rng = np.random.default_rng(0)
  base = [rng.integers(0, 10, size=rng.integers(1, 31, size=2)) for _ in range(5)]
  grids = [base[i] for i in rng.integers(0, 5, size=24)]
  grids[3] = np.full((30, 30), 9)
  grids[7] = np.full((30, 30), 9)
  padded, shapes = map(np.stack, zip(*(augment.pad_grid(g) for g in grids)))
  valid = rng.random(24) > 0.2
  got = np.asarray(V.equality_matrix(jnp.asarray(padded), jnp.asarray(shapes), jnp.asarray(valid)))
  want = (
      (padded[:, None] == padded[None]).all(axis=(2, 3))
      & (shapes[:, None] == shapes[None]).all(-1)
      & valid[:, None]
      & valid[None]
  )
  np.testing.assert_array_equal(got, want)


def some_transforms(n, seed=0):
  """n transforms: every D8 element in turn, each with a random colour permutation."""
  rng = np.random.default_rng(seed)
  colors = [np.concatenate([[0], rng.permutation(np.arange(1, 10))]) for _ in range(n)]
  return augment.Transform(
      jnp.arange(n, dtype=jnp.int32) % 8, jnp.asarray(np.stack(colors), jnp.int32)
  )


def transformed(grid, transforms):
  """`grid` (padded) under each of a batch of transforms."""
  padded, shape = augment.pad_grid(np.array(grid))
  apply = lambda t: augment.apply_transform(grid=jnp.asarray(padded), shape=jnp.asarray(shape), t=t)
  return jax.jit(jax.vmap(apply))(transforms)


def test_inverse_candidates_recover_the_original():
  transforms = some_transforms(16)
  grids_CHW, shapes_C2 = transformed(A, transforms)
  back_CHW, back_C2 = jax.jit(V.inverse_candidates)(grids_CHW, shapes_C2, transforms)
  padded, shape = augment.pad_grid(np.array(A))
  np.testing.assert_array_equal(back_CHW, np.broadcast_to(padded, (16, 30, 30)))
  np.testing.assert_array_equal(back_C2, np.broadcast_to(shape, (16, 2)))


def test_vote_transformed_votes_in_the_original_frame():
  # 8 candidates are A, each predicted under its own transform; 5 are one
  # raw grid X predicted under 5 D8 elements: identical in their frames,
  # 5 different answers once inverted.
  t_a = some_transforms(8, seed=1)
  a_grids, a_shapes = transformed(A, t_a)
  t_x = augment.Transform(
      jnp.arange(5, dtype=jnp.int32), jnp.tile(jnp.arange(10, dtype=jnp.int32), (5, 1))
  )
  x_grid, x_shape = augment.pad_grid(np.array([[1, 2], [3, 4]]))
  grids = jnp.concatenate([a_grids, jnp.broadcast_to(x_grid, (5, 30, 30))])
  shapes = jnp.concatenate([a_shapes, jnp.broadcast_to(x_shape, (5, 2))])
  transforms = jax.tree.map(lambda a, x: jnp.concatenate([a, x]), t_a, t_x)
  run = jax.jit(functools.partial(V.vote_transformed, config=FLAT))
  out = run(grids, shapes, jnp.ones(13, bool), transforms)
  back, back_shapes = jax.jit(V.inverse_candidates)(grids, shapes, transforms)
  (entry,) = V.to_submission(back[None], back_shapes[None], jax.tree.map(lambda x: x[None], out))
  assert entry['attempt_1'] == A
  assert out.votes.tolist() == [8, 1]
  # The second attempt is X inverted by the identity (candidate 8, d8 = 0):
  # it wins the 1-vote tie as the identity-transform answer.
  assert out.index.tolist() == [0, 8]
  assert entry['attempt_2'] == [[1, 2], [3, 4]]


def test_identity_detected_from_transforms():
  t = augment.Transform(
      jnp.array([0, 0, 3], jnp.int32),
      jnp.stack([jnp.arange(10), jnp.arange(10)[::-1], jnp.arange(10)]),
  )
  assert V.is_identity(t).tolist() == [True, False, False]
  assert bool(V.is_identity(augment.identity_transform()))


def test_vote_under_jit_and_vmap_over_test_inputs():
  sets = [
      ([A, B, B, C], [0, 1, 2, 2], [True, True, True, True]),
      ([C, C, A, A], [0, 0, 1, 1], [True, False, True, True]),
      ([A, A, A, A], [0, 1, 2, 3], [False, False, False, False]),
  ]
  batch = [candidates(g, valid=v, group=gr) for g, gr, v in sets]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
  for config in (FLAT, HIER):
    run = jax.jit(jax.vmap(functools.partial(V.vote, config=config)))
    out = run(**stacked)
    assert out.index.shape == (3, 2) and out.members.shape == (3, 2, 4)
    for n, c in enumerate(batch):
      one = V.vote(**c, config=config)
      for got, want in zip(out, one):
        np.testing.assert_array_equal(got[n], want)
  # Hierarchical (the last config): in set 1, C and A each win one group; C is earlier.
  assert out.index.tolist() == [[1, 0], [0, 2], [V.MISSING, V.MISSING]]


def test_rank_modes():
  counts = jnp.array([0, 3, 3, 1, 2])
  scores = jnp.array([9.0, -1.0, -2.0, -0.5, -3.0])
  assert V.rank(counts).tolist() == [1, 2, 4, 3, 0]
  assert V.rank(counts, preferred_C=jnp.array([0, 0, 1, 0, 0], bool)).tolist() == [2, 1, 4, 3, 0]
  # Score order, but a zero count (not a candidate) still comes last.
  assert V.rank(counts, scores, 'scores').tolist() == [3, 1, 2, 4, 0]
  assert V.rank(counts, scores, 'votes_then_scores').tolist() == [1, 2, 4, 3, 0]
  with pytest.raises(ValueError, match="'scores' needs scores"):
    V.rank(counts, mode='scores')


def test_scores_can_overrule_votes():
  grids = [A, A, A, B, C]
  scores = jnp.array([-5.0, -5.0, -2.0, -1.0, -9.0])  # A's mean -4
  c = candidates(grids)
  by_votes = V.vote(**c, scores_C=scores, config=FLAT)
  by_scores = V.vote(**c, scores_C=scores, config=V.VoteConfig('flat', 'scores'))
  assert chosen(by_votes, grids) == [A, B]
  assert chosen(by_scores, grids) == [B, A]


def test_to_details_names_the_groups_behind_each_attempt():
  grids = [A, B, A, A]
  out = V.vote(**candidates(grids, group=[0, 1, 4, 4]), config=FLAT)
  batched = jax.tree.map(lambda x: x[None], out)
  details = V.to_details(batched, np.array([[0, 1, 4, 4]]), augment.D8_NAMES)
  assert details == [{'votes': [3, 1], 'found_by': [['identity', 'transpose'], ['rot90']]}]


def test_bad_configs_are_named():
  with pytest.raises(ValueError, match='VoteConfig.method'):
    V.VoteConfig(method='plurality')
  with pytest.raises(ValueError, match='VoteConfig.rank_mode'):
    V.VoteConfig(rank_mode='probability')
  with pytest.raises(ValueError, match='group_top_k'):
    V.VoteConfig(group_top_k=0)
  c = candidates([A, B])
  del c['group_C']
  with pytest.raises(ValueError, match='needs group_C'):
    V.vote(**c, config=HIER)
  with pytest.raises(ValueError, match='VoteConfig.transform'):
    V.VoteConfig(method='single', transform='rot45')
  with pytest.raises(ValueError, match='ranks by votes only'):
    V.VoteConfig(method='marc', rank_mode='scores')
  with pytest.raises(ValueError, match='host-side'):
    V.vote(**candidates([A, B]), config=V.VoteConfig(method='marc'))
  with pytest.raises(ValueError, match='oracle voting needs the true output'):
    V.vote(**candidates([A, B]), config=V.VoteConfig(method='oracle'))


# Readouts for the paper's inference ablations: the same candidates, read differently.
# Group 0 (identity prompts): B, B, C; group 4 (transpose): A, A; group 1 (rot90): A, D.
READOUT_GRIDS = [B, B, C, A, A, A, D]
READOUT = dict(identity=[True] * 3 + [False] * 4, group=[0, 0, 0, 4, 4, 1, 1])


@pytest.mark.parametrize(
    'config, want, votes',
    [
        (FLAT, [A, B], [3, 2]),
        (V.VoteConfig(method='vanilla'), [B, C], [2, 1]),  # the identity prompts alone
        (V.VoteConfig(method='single', transform='transpose'), [A, None], [2, 0]),
        (V.VoteConfig(method='single', transform='rot90'), [A, D], [1, 1]),
        (V.VoteConfig(method='single', transform='identity'), [B, C], [2, 1]),
        (V.VoteConfig(method='single', transform='flip_lr'), [None, None], [0, 0]),
    ],
)
def test_readouts_read_their_candidates_only(config, want, votes):
  out = V.vote(**candidates(READOUT_GRIDS, **READOUT), config=config)
  assert chosen(out, READOUT_GRIDS) == want
  assert out.votes.tolist() == votes
  # Members are the read candidates equal to each attempt.
  for k, grid in enumerate(want):
    read = [i for i, g in enumerate(READOUT_GRIDS) if g == grid]
    if config.method == 'vanilla':
      read = [i for i in read if READOUT['identity'][i]]
    if config.method == 'single':
      group = augment.D8_NAMES.index(config.transform)
      read = [i for i in read if READOUT['group'][i] == group]
    assert np.flatnonzero(np.asarray(out.members)[k]).tolist() == read


ORACLE = V.VoteConfig(method='oracle')
ORACLE_JIT = jax.jit(functools.partial(V.vote, config=ORACLE))  # compiled once for all cases


def _truth(grid):
  padded, shape = augment.pad_grid(np.array(grid))
  return jnp.asarray(padded), jnp.asarray(shape)


@pytest.mark.parametrize(
    'truth, want',
    [
        (C, [C, A]),  # found once, by the identity prompts: promoted over the flat winner
        (D, [D, A]),
        (A, [A, B]),  # the flat winner already
        (E, [A, B]),  # no candidate is right: the flat vote
        ([[1, 2, 3]], [A, B]),  # A's first row only: a different answer
    ],
)
def test_oracle_puts_a_right_candidate_first(truth, want):
  out = V.vote(**candidates(READOUT_GRIDS, **READOUT), truth=_truth(truth), config=ORACLE)
  assert chosen(out, READOUT_GRIDS) == want
  again = ORACLE_JIT(**candidates(READOUT_GRIDS, **READOUT), truth=_truth(truth))  # as predict
  assert chosen(again, READOUT_GRIDS) == want
