"""The reference's hierarchical vote as coded (ekinakyurek/marc arclib/voting.py `vote`).

Over the candidates mapped back to the original frame:
1. categories: the untransformed prompts ('identity'), the inverse transforms
   the reference lists ('Transpose()', 'Flip(0)', 'Flip(1)', 'Rotate(180)',
   'Rotate(270)': its Rotate(90) query inverts by Rotate(270)), and 'all'
   (every candidate, those of other transforms or of colour permutations too);
2. each category nominates three answers (`top_three`): its most common, 2nd
   and 3rd; a missing 2nd or 3rd is the row-wise majority grid or, when that is
   already nominated, the column-wise one, which may itself be a nominee:
   duplicates are kept, so a category with one answer nominates it three times;
3. `top_three` of all nominations gives C1, C2, C3; when C2 and C3 were
   nominated equally often, C2 stays only if the identity prompts found it
   more often than C3 (with no identity candidate this step is skipped, as the
   reference's try/except does); the attempts are C1 and C2.
A majority grid need not be any candidate, so this vote returns grids, not
candidate indices; it runs on the host (tens of candidates per test input).

Ties: the reference breaks them by the iteration order of Python sets of grids
(arbitrary, fixed by the grids' hashes); we break them by first occurrence
(candidate order; 'all' first, then the categories in the order above). On
candidates without such ties the two give the same top 2
(tests/infer/test_marc_vote.py, goldens from the reference). With
first-occurrence ties the majority grid of at most two distinct answers is the
first ranked one, so here a fill always repeats a category's winner.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

from ttt_jax.data import augment
from ttt_jax.infer import prompts
from ttt_jax.infer.vote import EMPTY_GRID

Grid = tuple[tuple[int, ...], ...]

# The reference's geometric augmenters as our D8 elements (augment.D8_NAMES), checked
# against its own output in tests/infer/test_marc_queries.py.
AUGMENTER_D8 = {
    'Rotate(90)': 1,
    'Rotate(180)': 2,
    'Rotate(270)': 3,
    'Transpose()': 4,
    'Flip(0)': 5,
    'Flip(1)': 7,
}
CATEGORIES = ('identity', 'Transpose()', 'Flip(0)', 'Flip(1)', 'Rotate(180)', 'Rotate(270)')
_NAME_OF_D8 = {k: name for name, k in AUGMENTER_D8.items()}


def category(d8: int, colors: Sequence[int]) -> str | None:
  """The reference's category of a candidate prompted under (d8, colors): 'identity', the
  name of the augmenter that inverts it, or None (counted in 'all' only)."""
  if tuple(colors) != prompts.IDENTITY_COLORS:
    return None
  if d8 == 0:
    return 'identity'
  name = _NAME_OF_D8.get(int(augment.D8_INVERSE[d8]))
  return name if name in CATEGORIES else None


def as_grid(grid: np.ndarray) -> Grid:
  return tuple(tuple(int(v) for v in row) for row in np.asarray(grid))


def _ranked(items: Sequence) -> list:
  """Distinct items, most frequent first; equal counts in order of first occurrence."""
  return [item for item, _ in collections.Counter(items).most_common()]


def majority_grid(outputs: Sequence[Grid], transpose: bool = False) -> Grid:
  """The reference's row_base_majority_voting: the most common shape, each row the most
  common row of that width at that index (with `transpose`, the same by columns)."""
  if transpose:
    outputs = [tuple(zip(*g)) for g in outputs]
  height, width = _ranked([(len(g), len(g[0])) for g in outputs])[0]
  rows = tuple(
      _ranked([g[r] for g in outputs if len(g) > r and len(g[r]) == width])[0]
      for r in range(height)
  )
  return tuple(zip(*rows)) if transpose else rows


def top_three(outputs: Sequence[Grid]) -> tuple[Grid, Grid, Grid]:
  """The reference's get_all_type_of_votingsv2 on a non-empty list: the three most common
  answers, a missing 2nd or 3rd filled with the row-wise, else the column-wise majority."""
  ranked = _ranked(outputs)
  first = ranked[0]
  second = ranked[1] if len(ranked) > 1 else first
  third = ranked[2] if len(ranked) > 2 else first
  by_rows, by_cols = majority_grid(outputs), majority_grid(outputs, transpose=True)
  if second == first:
    second = by_rows if by_rows != first else by_cols
  if third in (first, second):
    third = by_rows if by_rows not in (first, second) else by_cols
  return first, second, third


def vote(outputs: Sequence[Grid], categories: Sequence[str | None]) -> tuple[Grid, Grid, list]:
  """(attempt 1, attempt 2, all nominations) of a non-empty list of candidate grids in the
  original frame, `categories[i]` the category of outputs[i] (see `category`)."""
  if not outputs:
    raise ValueError('marc vote: no candidates')
  by_category = {'all': list(outputs)}
  for grid, name in zip(outputs, categories):
    if name is not None:
      by_category.setdefault(name, []).append(grid)
  nominations = [
      grid
      for name in ('all', *CATEGORIES)
      if name in by_category
      for grid in top_three(by_category[name])
  ]
  c1, c2, c3 = top_three(nominations)
  identity = by_category.get('identity')
  if identity and nominations.count(c2) == nominations.count(c3):
    if identity.count(c2) <= identity.count(c3):
      c2 = c3
  return c1, c2, nominations


def vote_candidates(cands) -> tuple[dict, dict]:
  """One test input's Kaggle entry and details (the format of vote.to_details) from its
  candidates (infer.candidates.Candidate, in their prompts' frames; maybe none valid)."""
  kept = [c for c in cands if c.grid is not None]
  outputs = [as_grid(prompts.invert_grid(c.grid, c.d8, c.colors)) for c in kept]
  counts = {'num_candidates': len(cands), 'num_valid': len(kept)}
  if not outputs:
    entry = {'attempt_1': EMPTY_GRID, 'attempt_2': EMPTY_GRID}
    return entry, {'votes': [0, 0], 'found_by': [[], []], **counts}
  c1, c2, nominations = vote(outputs, [category(c.d8, c.colors) for c in kept])
  found_by = [
      sorted({augment.D8_NAMES[c.d8] for c, g in zip(kept, outputs) if g == attempt})
      for attempt in (c1, c2)
  ]
  entry = {'attempt_1': [list(r) for r in c1], 'attempt_2': [list(r) for r in c2]}
  votes = [nominations.count(c1), nominations.count(c2)]
  return entry, {'votes': votes, 'found_by': found_by, **counts}
