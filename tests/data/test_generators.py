"""Generated tasks: deterministic, valid, short, the rule holding on every pair (each
checked here independently of the generator's code), and a frozen held-out split."""

import collections
import hashlib
import os

import numpy as np
import pytest

from ttt_jax.data import arc, generators as G
from ttt_jax.data.format import task_length

DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'data')
HELDOUT_IDS = os.path.join(DATA, 'generated_heldout120.txt')
VAL_IDS = os.path.join(DATA, 'generated_val60.txt')


def _components(mask):
  """8-connected components of a boolean grid: a list of cell sets."""
  seen, out = set(), []
  for start in zip(*np.nonzero(mask)):
    if start in seen:
      continue
    stack, comp = [start], set()
    seen.add(start)
    while stack:
      r, c = stack.pop()
      comp.add((r, c))
      for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
          n = (r + dr, c + dc)
          if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and n not in seen:
            seen.add(n)
            stack.append(n)
    out.append(comp)
  return out


def _d8(x, k):
  return np.rot90(x.T if k >= 4 else x, k % 4)


def _consistent_map(pairs):
  """One colour -> colour function over every cell of every pair."""
  table = {}
  for x, y in pairs:
    if x.shape != y.shape:
      return False
    for a, b in zip(x.ravel(), y.ravel()):
      if table.setdefault(int(a), int(b)) != int(b):
        return False
  return True


def _fell_down(x, y):
  if x.shape != y.shape:
    return False
  for c in range(x.shape[1]):
    cells = x[:, c][x[:, c] != 0]
    want = np.concatenate([np.zeros(x.shape[0] - cells.size, x.dtype), cells])
    if not np.array_equal(y[:, c], want):
      return False
  return True


def _holds(family, variant, pairs):
  """The family's rule, written again from its definition."""
  if family == 'd8':
    return all(np.array_equal(y, _d8(x, int(variant))) for x, y in pairs)
  if family == 'color_map':
    changed = {int(a) for x, y in pairs for a, b in zip(x.ravel(), y.ravel()) if a != b}
    return _consistent_map(pairs) and len(changed) <= int(variant)
  if family == 'upscale':
    fh, fw = map(int, variant.split('x'))
    return all(np.array_equal(y, x.repeat(fh, 0).repeat(fw, 1)) for x, y in pairs)
  if family == 'tile':
    layout = G._TILE_SCHEMES[variant]  # pylint: disable=protected-access
    out = lambda x: np.block([[_d8(x, k) for k in row] for row in layout])
    return all(np.array_equal(y, out(x)) for x, y in pairs)
  if family == 'boolean':
    op, orientation = variant.split('-')
    ok = True
    for x, y in pairs:
      g = x if orientation == 'lr' else x.T
      yy = y if orientation == 'lr' else y.T
      w = (g.shape[1] - 1) // 2
      a, b = g[:, :w] != 0, g[:, w + 1 :] != 0
      want = {'and': a & b, 'or': a | b, 'xor': a ^ b, 'nor': ~(a | b)}[op]
      ok &= np.array_equal(yy != 0, want) and len(set(g[:, w])) == 1 and g[0, w] != 0
    return ok
  if family == 'gravity':
    k = {'down': 0, 'up': 2, 'left': 3, 'right': 1}[variant]
    return all(_fell_down(np.rot90(x, k), np.rot90(y, k)) for x, y in pairs)
  if family == 'recolor_by_size':
    by_size = {}
    for x, y in pairs:
      if not np.array_equal(x != 0, y != 0):
        return False
      for comp in _components(x != 0):
        colors = {int(y[cell]) for cell in comp}
        if len(colors) != 1 or by_size.setdefault(len(comp), min(colors)) != min(colors):
          return False
    return len(set(by_size.values())) == len(by_size)
  if family == 'crop_odd':
    for x, y in pairs:
      odd = set(y[y != 0].tolist())
      if len(odd) != 1 or (x == odd.pop()).sum() != (y != 0).sum():
        return False
      h, w = y.shape
      if not any(
          np.array_equal(x[r : r + h, c : c + w], y)
          for r in range(x.shape[0] - h + 1)
          for c in range(x.shape[1] - w + 1)
      ):
        return False
    return True
  raise AssertionError(family)


def test_every_variant_valid_short_and_its_rule_holds():
  for fam in G.FAMILIES:
    for variant in fam.train + fam.held_out:
      for seed in range(12):
        task = G.generate(fam.name, variant, seed)
        pairs = [(p.input, p.output) for p in (*task.train, *task.test)]
        for g in (g for p in pairs for g in p):
          assert g.dtype == np.int8 and 1 <= min(g.shape) and max(g.shape) <= 30
          assert g.min() >= 0 and g.max() <= 9
        assert 3 <= len(task.train) <= 4 and len(task.test) == 1
        assert task_length(task) <= G.MAX_TOKENS
        assert _holds(fam.name, variant, pairs), (fam.name, variant, seed)
        assert G.family_of(task.id) == (fam.name, variant)


def test_deterministic_and_seeds_differ():
  a, b, c = (G.generate('tile', '2x2-rotate', s) for s in (5, 5, 6))
  assert a == b and a != c
  first, _ = arc.load_tasks('gen:train@slice=0:30')
  again, _ = arc.load_tasks('gen:train@slice=0:30')
  assert first == again


def test_split_train_never_holds_a_held_out_variant_or_family():
  held = {(f.name, v) for f in G.FAMILIES for v in f.held_out}
  train, _ = arc.load_tasks('gen:train@slice=0:600')
  assert not {G.family_of(t.id) for t in train} & held
  assert G.HELD_OUT_FAMILY not in {G.family_of(t.id)[0] for t in train}
  assert not G.BY_NAME[G.HELD_OUT_FAMILY].train
  heldout, _ = arc.load_tasks('gen:heldout@slice=0:120')
  assert {G.family_of(t.id) for t in heldout} == held
  assert collections.Counter(G.family_of(t.id) for t in heldout) == {v: 10 for v in held}


def _assert_frozen(ids_file: str, split: str, size: int) -> list:
  """The ids file's tasks are the split's first `size`, with the grids it was frozen with
  (the sha256 of every task's hash, written in its header)."""
  ids = arc.read_task_ids(ids_file)
  tasks, _ = arc.load_tasks(f'gen:{split}@ids_file={ids_file}')
  assert [t.id for t in tasks] == ids and len(ids) == size
  assert ids == [t.id for t in arc.load_tasks(f'gen:{split}@slice=0:{size}')[0]]
  digest = hashlib.sha256(''.join(arc.task_hash(t) for t in tasks).encode()).hexdigest()
  with open(ids_file) as f:
    assert f'sha256 {digest}' in f.read()
  return tasks


def test_the_pre_registered_held_out_split_is_unchanged():
  """configs/data/generated_heldout120.txt was committed before any result."""
  _assert_frozen(HELDOUT_IDS, 'heldout', 120)


def test_the_validation_split_is_frozen_and_disjoint_from_the_held_out_split():
  """configs/data/generated_val60.txt (for choosing recipes) was committed before any result:
  the held-out variants, 5 tasks each, seeds and grids of its own."""
  val = _assert_frozen(VAL_IDS, 'val', 60)
  held = {(f.name, v) for f in G.FAMILIES for v in f.held_out}
  assert collections.Counter(G.family_of(t.id) for t in val) == {v: 5 for v in held}
  heldout, _ = arc.load_tasks(f'gen:heldout@ids_file={HELDOUT_IDS}')
  assert not {arc.task_hash(t) for t in val} & {arc.task_hash(t) for t in heldout}
  assert not {t.id for t in val} & {t.id for t in heldout}


def test_bad_names_are_errors():
  with pytest.raises(ValueError, match='no variant'):
    G.generate('d8', '9', 0)
  with pytest.raises(ValueError, match='unknown generated split'):
    arc.load_tasks('gen:test')
