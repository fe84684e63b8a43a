"""Voting over augmented predictions: invert, group identical grids, pick two.

Per test input there are C candidate grids (one per prompt variant), each
predicted in its transformed frame. `vote_transformed` maps them back with the
inverse transforms and votes. It is fixed-shape array code: it runs under
`jit` and `vmap` (over test inputs, over tasks) unchanged.

Identical candidates form a class. Grids are canonical (FILL outside the
shape), so two candidates are the same answer iff their padded grids and
shapes are equal; invalid candidates (decoding failed) belong to no class.

Methods (`VoteConfig.method`):
- 'flat': a class's votes = the number of its candidates.
- 'hierarchical' (Akyürek et al. 2024, "Augmented inference", voting):
  1. intra-transformation voting: within each group (the candidates produced
     under one transformation) rank the classes by their votes in that group
     and keep the top `group_top_k` (3 in the paper);
  2. global voting: a class's votes = the number of groups whose top k
     contain it; the two most voted are attempt 1 and attempt 2.
  The paper fills a group with fewer than 3 distinct answers with row- and
  column-wise majority grids; we synthesise no grids: such a group simply
  contributes fewer classes.
- 'marc': the reference's vote as coded, majority fills included: host-side
  numpy in marc_vote.py (it may answer with a grid no candidate holds), not here.
Readouts of the same candidates, for the paper's inference ablations:
- 'vanilla': the untransformed prompts' candidates alone, flat.
- 'single': one transformation's candidates alone (`VoteConfig.transform`), flat.
- 'oracle': a candidate equal to the true output first (needs it: an upper
  bound, "solved if any candidate is right"), then flat.
Ties, at every stage: the class found under the identity transform first (the
paper's rule), then the class whose first candidate comes earliest. The result
is deterministic.

`rank` orders classes by votes, by score (e.g. the log-probability a
product-of-experts re-scorer gives) or by votes then score; a class's score is
the mean score of its candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import augment
from ttt_jax.data.arc import NUM_COLORS

MISSING = -1  # attempt index when there is no such attempt
# Submitted when a test input has no valid candidate: the Kaggle format needs
# a grid in both attempts.
EMPTY_GRID = [[0]]
METHODS = ('hierarchical', 'flat', 'marc', 'vanilla', 'single', 'oracle')
HOST_METHODS = ('marc',)  # voted by marc_vote.py, not by the array code here
RANK_MODES = ('votes', 'scores', 'votes_then_scores')


@dataclasses.dataclass(frozen=True)
class VoteConfig:
  method: str = 'hierarchical'  # one of METHODS
  rank_mode: str = 'votes'  # one of RANK_MODES
  group_top_k: int = 3  # classes each group keeps (hierarchical)
  transform: str = 'identity'  # the group 'single' reads (an augment.D8_NAMES entry)

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f'VoteConfig.method: {self.method!r} is not one of {METHODS}')
    if self.transform not in augment.D8_NAMES:
      raise ValueError(f'VoteConfig.transform: {self.transform!r} is not one of {augment.D8_NAMES}')
    if self.method in HOST_METHODS and self.rank_mode != 'votes':
      raise ValueError(f'VoteConfig.rank_mode: method {self.method!r} ranks by votes only')
    if self.rank_mode not in RANK_MODES:
      raise ValueError(f'VoteConfig.rank_mode: {self.rank_mode!r} is not one of {RANK_MODES}')
    if self.group_top_k < 1:
      raise ValueError(f'VoteConfig.group_top_k: {self.group_top_k} is below 1')


class Attempts(NamedTuple):
  """The two answers for one test input (leading axes added by vmap)."""

  index: jax.Array  # int32 [2]: first candidate of each chosen class, or MISSING
  votes: jax.Array  # int32 [2]: the class's votes under the method, 0 if missing
  members: jax.Array  # bool [2, C]: the candidates equal to each attempt


# ------------------------------------------------------------ candidates


def inverse_candidates(
    grids_CHW: jax.Array, shapes_C2: jax.Array, transforms: augment.Transform
) -> tuple[jax.Array, jax.Array]:
  """Maps grids predicted under `transforms` ([C] of them) back to the original frame."""
  inverse_one = lambda g, s, t: augment.apply_transform(grid=g, shape=s, t=t)
  return jax.vmap(inverse_one)(grids_CHW, shapes_C2, augment.invert_transform(transforms))


def is_identity(transforms: augment.Transform) -> jax.Array:
  """bool [...]: the transform moves no cell and changes no colour."""
  return (transforms.d8 == 0) & jnp.all(transforms.colors == jnp.arange(NUM_COLORS), axis=-1)


def equality_matrix(grids_CHW: jax.Array, shapes_C2: jax.Array, valid_C: jax.Array) -> jax.Array:
  """bool [C, C]: candidates i and j are both valid and the same grid.

  |x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2 x_i.x_j: one matmul instead of a
  [C, C, 30, 30] comparison. Exact in float32: every term is an integer
  below 2^24 (cells are -1..9, shapes at most 30).
  """
  x_CF = jnp.concatenate([grids_CHW.reshape(grids_CHW.shape[0], -1), shapes_C2], axis=-1)
  x_CF = x_CF.astype(jnp.float32)
  sq_C = jnp.sum(x_CF * x_CF, axis=-1)
  gram_CC = jnp.matmul(x_CF, x_CF.T, precision=jax.lax.Precision.HIGHEST)
  same_CC = sq_C[:, None] + sq_C[None, :] - 2 * gram_CC == 0
  return same_CC & valid_C[:, None] & valid_C[None, :]


def _first_of_class(same_CC: jax.Array, valid_C: jax.Array) -> jax.Array:
  """bool [C]: i is valid and no earlier candidate is in its class."""
  return valid_C & ~jnp.any(jnp.tril(same_CC, k=-1), axis=1)


def _class_mean(same_CC: jax.Array, values_C: jax.Array) -> jax.Array:
  total_C = jnp.sum(jnp.where(same_CC, values_C[None, :], 0.0), axis=1)
  return total_C / jnp.maximum(jnp.sum(same_CC, axis=1), 1)


# ---------------------------------------------------------------- ranking


def _rank_keys(counts_C, scores_C, mode, preferred_C, promoted_C=None) -> tuple[jax.Array, ...]:
  """Sort keys, most significant first, larger is better (the index breaks ties)."""
  if mode not in RANK_MODES:
    raise ValueError(f'rank mode {mode!r} is not one of {RANK_MODES}')
  if scores_C is None and mode != 'votes':
    raise ValueError(f'rank mode {mode!r} needs scores')
  by_mode = {
      'votes': (counts_C,),
      'scores': (scores_C,),
      'votes_then_scores': (counts_C, scores_C),
  }[mode]
  if preferred_C is None:
    preferred_C = jnp.zeros(counts_C.shape, bool)
  promoted = () if promoted_C is None else (promoted_C,)
  return (counts_C > 0, *promoted, *by_mode, preferred_C)


def rank(
    counts_C: jax.Array,
    scores_C: jax.Array | None = None,
    mode: str = 'votes',
    preferred_C: jax.Array | None = None,
    promoted_C: jax.Array | None = None,
) -> jax.Array:
  """int32 [C]: candidate indices, best first.

  Entries with `counts_C == 0` (invalid, or not the first of their class)
  come last in every mode. The rest: `promoted_C` first (the oracle's right
  answer), then by `mode`: 'votes' (most first), 'scores' (highest first),
  'votes_then_scores'; then `preferred_C` first (e.g. found by the identity
  transform); then the smaller index.
  """
  keys = _rank_keys(counts_C, scores_C, mode, preferred_C, promoted_C)
  # lexsort sorts ascending by its last key first.
  ascending = [-k.astype(jnp.float32) for k in reversed(keys)]
  return jnp.lexsort([jnp.arange(counts_C.shape[0]), *ascending]).astype(jnp.int32)


def _ranked_above(keys: Sequence[jax.Array]) -> jax.Array:
  """bool [C, C]: [i, k] = candidate k ranks above candidate i (as in `rank`)."""
  index_C = jnp.arange(keys[0].shape[0])
  above, tied = False, True
  for key in (*keys, -index_C):
    above = above | (tied & (key[None, :] > key[:, None]))
    tied = tied & (key[None, :] == key[:, None])
  return above


# ----------------------------------------------------------------- voting


def _group_top_k(same_CC, valid_C, group_C, scores_C, preferred_C, config: VoteConfig) -> jax.Array:
  """bool [C]: the first candidate of each class in its group's top k."""
  in_group_CC = group_C[:, None] == group_C[None, :]
  same_in_group_CC = same_CC & in_group_CC
  first_C = _first_of_class(same_in_group_CC, valid_C)
  votes_C = jnp.where(first_C, jnp.sum(same_in_group_CC, axis=1), 0)
  keys = _rank_keys(votes_C, scores_C, config.rank_mode, preferred_C)
  rivals_CC = _ranked_above(keys) & in_group_CC & first_C[None, :]
  return first_C & (jnp.sum(rivals_CC, axis=1) < config.group_top_k)


def _readout_valid(valid_C, preferred_C, group_C, config: VoteConfig) -> jax.Array:
  """The candidates a readout reads: all, or only the untransformed prompts' ('vanilla'),
  or only one transformation's ('single')."""
  if config.method == 'vanilla':
    return valid_C & preferred_C
  if config.method == 'single':
    return valid_C & (group_C == augment.D8_NAMES.index(config.transform))
  return valid_C


def _equals_truth(grids_CHW, shapes_C2, valid_C, truth) -> jax.Array:
  truth_HW, truth_shape_2 = truth
  same_C = jnp.all(grids_CHW == truth_HW[None], axis=(1, 2))
  return valid_C & same_C & jnp.all(shapes_C2 == truth_shape_2[None], axis=-1)


def vote(
    grids_CHW: jax.Array,
    shapes_C2: jax.Array,
    valid_C: jax.Array,
    preferred_C: jax.Array,
    group_C: jax.Array | None = None,
    scores_C: jax.Array | None = None,
    truth: tuple[jax.Array, jax.Array] | None = None,
    *,
    config: VoteConfig = VoteConfig(),
) -> Attempts:
  """Two attempts from C candidates already in the original frame.

  `preferred_C` marks candidates found under the identity transform (the
  tie-break, and what 'vanilla' reads); `group_C` (int ids: the D8 element)
  the transformation that produced each candidate, needed by 'hierarchical'
  and 'single'; `scores_C` per-candidate scores (higher is better) for the
  score rank modes; `truth` the true output (grid [H, W] FILL-padded, shape
  [2]), needed by 'oracle'.
  """
  if config.method in HOST_METHODS:
    raise ValueError(f'vote method {config.method!r} is host-side: see marc_vote.py')
  if config.method in ('hierarchical', 'single') and group_C is None:
    raise ValueError(f'{config.method} voting needs group_C, the transformation of each candidate')
  if config.method == 'oracle' and truth is None:
    raise ValueError('oracle voting needs the true output')
  preferred_C = preferred_C.astype(bool)
  valid_C = _readout_valid(valid_C.astype(bool), preferred_C, group_C, config)
  same_CC = equality_matrix(grids_CHW, shapes_C2, valid_C)
  first_C = _first_of_class(same_CC, valid_C)
  preferred_C = jnp.any(same_CC & preferred_C[None, :], axis=1)
  if scores_C is not None:
    scores_C = _class_mean(same_CC, scores_C.astype(jnp.float32))

  if config.method == 'hierarchical':  # each group votes once for each class in its top k
    voters_C = _group_top_k(same_CC, valid_C, group_C, scores_C, preferred_C, config)
  else:
    voters_C = valid_C
  votes_C = jnp.where(first_C, jnp.sum(same_CC & voters_C[None, :], axis=1), 0)

  correct_C = None
  if config.method == 'oracle':
    correct_C = _equals_truth(grids_CHW, shapes_C2, valid_C, truth)
  best_2 = rank(votes_C, scores_C, config.rank_mode, preferred_C, correct_C)[:2]
  found_2 = votes_C[best_2] > 0
  return Attempts(
      index=jnp.where(found_2, best_2, MISSING).astype(jnp.int32),
      votes=jnp.where(found_2, votes_C[best_2], 0).astype(jnp.int32),
      members=same_CC[best_2] & found_2[:, None],
  )


def vote_transformed(
    grids_CHW: jax.Array,
    shapes_C2: jax.Array,
    valid_C: jax.Array,
    transforms: augment.Transform,
    group_C: jax.Array | None = None,
    scores_C: jax.Array | None = None,
    truth: tuple[jax.Array, jax.Array] | None = None,
    *,
    config: VoteConfig = VoteConfig(),
) -> Attempts:
  """Inverts candidates predicted under `transforms`, then votes.

  Groups default to each transform's D8 element (the paper groups by
  geometric transformation). The attempt indices point into the
  candidates; take their grids from `inverse_candidates`.
  """
  grids_CHW, shapes_C2 = inverse_candidates(grids_CHW, shapes_C2, transforms)
  group_C = transforms.d8 if group_C is None else group_C
  return vote(
      grids_CHW,
      shapes_C2,
      valid_C,
      is_identity(transforms),
      group_C,
      scores_C,
      truth,
      config=config,
  )


# ------------------------------------------------------ host-side helpers


def to_submission(grids_NCHW: Any, shapes_NC2: Any, attempts: Attempts) -> list[dict]:
  """One task's Kaggle entries: {'attempt_1', 'attempt_2'} per test input n.

  Grids are the candidates in the original frame (`inverse_candidates`).
  A missing attempt_2 repeats attempt_1 (a free second try costs nothing);
  with no valid candidate both attempts are EMPTY_GRID.
  """
  grids, shapes = np.asarray(grids_NCHW), np.asarray(shapes_NC2)
  as_list = lambda n, i: augment.unpad_grid(grids[n, i], shapes[n, i]).tolist()
  entries = []
  for n, (i1, i2) in enumerate(np.asarray(attempts.index)):
    first = EMPTY_GRID if i1 == MISSING else as_list(n, i1)
    second = first if i2 == MISSING else as_list(n, i2)
    entries.append({'attempt_1': first, 'attempt_2': second})
  return entries


def to_details(
    attempts: Attempts, group_NC: Any, group_names: Sequence[str] | None = None
) -> list[dict]:
  """Per test input: the attempts' votes and the groups whose candidates found each.

  The format `ttt_jax.eval.metrics` reports: {'votes': [v1, v2],
  'found_by': [[names], [names]]}, `group_names[g]` naming group id g.
  """
  votes, members = np.asarray(attempts.votes), np.asarray(attempts.members)
  groups = np.asarray(group_NC)
  name = str if group_names is None else (lambda g: group_names[g])
  return [
      {
          'votes': votes[n].tolist(),
          'found_by': [sorted({name(int(g)) for g in groups[n][members[n, k]]}) for k in range(2)],
      }
      for n in range(votes.shape[0])
  ]
