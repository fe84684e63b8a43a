"""Augmentations: exact inverses, a D8 group table, numpy parity, canonical FILL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data import augment as A


def random_grids(seed: int, n: int, max_side: int = 30):
  rng = np.random.default_rng(seed)
  grids = [rng.integers(0, 10, rng.integers(1, max_side + 1, 2)) for _ in range(n)]
  padded = [A.pad_grid(g) for g in grids]
  return grids, np.stack([p for p, _ in padded]), np.stack([s for _, s in padded])


def assert_canonical(grids, shapes):
  grids, shapes = np.asarray(grids), np.asarray(shapes)
  rows = np.arange(A.SIZE)[:, None]
  cols = np.arange(A.SIZE)[None, :]
  inside = (rows < shapes[..., 0, None, None]) & (cols < shapes[..., 1, None, None])
  assert (grids[~inside] == A.FILL).all()
  assert ((grids[inside] >= 0) & (grids[inside] < 10)).all()


def test_pad_unpad_round_trip_and_bad_shape():
  grids, padded, shapes = random_grids(0, 20)
  for g, p, s in zip(grids, padded, shapes):
    np.testing.assert_array_equal(A.unpad_grid(p, s), g)
  assert_canonical(padded, shapes)
  with pytest.raises(ValueError, match='31'):
    A.pad_grid(np.zeros((2, 31), int))


def test_d8_names_match_numpy_references():
  g = np.arange(12).reshape(3, 4)
  refs = {
      'identity': g,
      'rot90': np.rot90(g),
      'rot180': np.rot90(g, 2),
      'rot270': np.rot90(g, 3),
      'transpose': g.T,
      'flip_ud': np.flip(g, 0),
      'anti_transpose': np.rot90(g, 2).T,
      'flip_lr': np.flip(g, 1),
  }
  for k, name in enumerate(A.D8_NAMES):
    np.testing.assert_array_equal(A.numpy_d8(g, k), refs[name])


def test_apply_d8_matches_numpy_under_jit_and_vmap():
  grids, padded, shapes = random_grids(1, 24)
  batched = jax.jit(jax.vmap(A.apply_d8, in_axes=(0, 0, None)))
  for k in range(8):
    out, out_shapes = batched(padded, shapes, k)
    assert_canonical(out, out_shapes)
    for g, o, s in zip(grids, np.asarray(out), np.asarray(out_shapes)):
      np.testing.assert_array_equal(A.unpad_grid(o, s), A.numpy_d8(g, k))


def test_d8_inverse_round_trip_per_grid_element():
  _, padded, shapes = random_grids(2, 64)
  ks = np.random.default_rng(2).integers(0, 8, 64)

  @jax.jit
  @jax.vmap
  def there_and_back(g, s, k):
    g2, s2 = A.apply_d8(g, s, k)
    return A.apply_d8(g2, s2, A.invert_d8(k))

  back, back_shapes = there_and_back(padded, shapes, ks)
  np.testing.assert_array_equal(back, padded)
  np.testing.assert_array_equal(back_shapes, shapes)


def test_d8_table_is_a_group():
  c, inv = A.D8_COMPOSE, A.D8_INVERSE
  e = range(8)
  assert all(sorted(c[a]) == list(e) and sorted(c[:, a]) == list(e) for a in e)
  assert all(c[0, a] == a and c[a, 0] == a for a in e)
  assert all(c[a, inv[a]] == 0 and c[inv[a], a] == 0 for a in e)
  assert all(c[c[a, b], d] == c[a, c[b, d]] for a in e for b in e for d in e)
  # Rotations form a cyclic subgroup; reflections are their own inverses.
  assert [int(c[1, 1]), int(c[1, c[1, 1]])] == [2, 3]
  assert list(inv[4:]) == [4, 5, 6, 7]


def test_compose_d8_equals_sequential_application():
  _, padded, shapes = random_grids(3, 8)
  a, b = np.divmod(np.arange(64), 8)  # every (a, b)

  def both_ways(g, s, a, b):
    g1, s1 = A.apply_d8(*A.apply_d8(g, s, a), b)
    g2, s2 = A.apply_d8(g, s, A.compose_d8(a, b))
    return g1, s1, g2, s2

  every_pair = jax.vmap(both_ways, in_axes=(None, None, 0, 0))
  g1, s1, g2, s2 = jax.jit(jax.vmap(every_pair, in_axes=(0, 0, None, None)))(padded, shapes, a, b)
  np.testing.assert_array_equal(g1, g2)
  np.testing.assert_array_equal(s1, s2)


def test_color_permutations():
  _, padded, shapes = random_grids(4, 16)
  rngs = jax.random.split(jax.random.key(0), 16)
  perms = jax.vmap(A.random_color_permutation)(rngs)
  assert (perms[:, 0] == 0).all()
  assert (np.sort(np.asarray(perms), axis=1) == np.arange(10)).all()
  assert len({tuple(p) for p in np.asarray(perms)}) > 1

  @jax.jit
  @jax.vmap
  def there_and_back(g, p):
    g2 = A.apply_colors(g, p)
    return g2, A.apply_colors(g2, A.invert_permutation(p))

  moved, back = there_and_back(padded, perms)
  assert_canonical(moved, shapes)
  np.testing.assert_array_equal(back, padded)
  np.testing.assert_array_equal(
      np.asarray(moved)[padded >= 0],
      np.asarray(perms)[np.nonzero(padded >= 0)[0], padded[padded >= 0]],
  )
  free = A.random_color_permutation(jax.random.key(3), keep_zero=False)
  assert sorted(np.asarray(free).tolist()) == list(range(10))


def test_transform_inverse_and_composition_under_vmap():
  grids, padded, shapes = random_grids(5, 32)
  ts = A.random_transforms(jax.random.key(1), 32)
  us = A.random_transforms(jax.random.key(2), 32)
  apply = jax.jit(jax.vmap(A.apply_transform))
  moved, moved_shapes = apply(padded, shapes, ts)
  assert_canonical(moved, moved_shapes)
  back, back_shapes = apply(moved, moved_shapes, jax.vmap(A.invert_transform)(ts))
  np.testing.assert_array_equal(back, padded)
  np.testing.assert_array_equal(back_shapes, shapes)
  twice, twice_shapes = apply(moved, moved_shapes, us)
  once, once_shapes = apply(padded, shapes, jax.vmap(A.compose_transforms)(ts, us))
  np.testing.assert_array_equal(twice, once)
  np.testing.assert_array_equal(twice_shapes, once_shapes)
  # Parity with numpy: D8 of the grid, then the colour table.
  for g, m, s, k, p in zip(
      grids, np.asarray(moved), np.asarray(moved_shapes), np.asarray(ts.d8), np.asarray(ts.colors)
  ):
    np.testing.assert_array_equal(A.unpad_grid(m, s), p[A.numpy_d8(g, k)])
  ident, ident_shapes = A.apply_transform(padded[0], shapes[0], A.identity_transform())
  np.testing.assert_array_equal(ident, padded[0])
  np.testing.assert_array_equal(ident_shapes, shapes[0])


def test_random_transforms_flags():
  plain = A.random_transforms(jax.random.key(0), 16, d8=False, colors=False)
  assert (plain.d8 == 0).all() and (plain.colors == jnp.arange(10)).all()
  full = A.random_transforms(jax.random.key(0), 64)
  assert len(set(np.asarray(full.d8).tolist())) == 8


def test_example_order_inverse_under_vmap():
  _, padded, _ = random_grids(6, 7)
  orders = jax.vmap(A.random_example_order, in_axes=(0, None))(
      jax.random.split(jax.random.key(4), 10), 7
  )

  @jax.jit
  @jax.vmap
  def there_and_back(order):
    shuffled = A.permute_examples(jnp.asarray(padded), order)
    return shuffled, A.permute_examples(shuffled, A.invert_example_order(order))

  shuffled, back = there_and_back(orders)
  for order, s in zip(np.asarray(orders), np.asarray(shuffled)):
    np.testing.assert_array_equal(s, padded[order])
  np.testing.assert_array_equal(back, np.broadcast_to(padded, back.shape))


def _numpy_train_only(g, name, dy, dx):
  return {
      'upscale_h': np.repeat(g, 2, 0),
      'upscale_w': np.repeat(g, 2, 1),
      'upscale_hw': np.repeat(np.repeat(g, 2, 0), 2, 1),
      'tile_h': np.tile(g, (2, 1)),
      'tile_w': np.tile(g, (1, 2)),
      'tile_hw': np.tile(g, (2, 2)),
      'translate': np.roll(g, (dy, dx), (0, 1)),
      'reflect_h': np.concatenate([g, g[::-1]], 0),
      'reflect_w': np.concatenate([g, g[:, ::-1]], 1),
  }[name]


def test_train_only_ops_match_numpy_and_flag_oversize():
  grids, padded, shapes = random_grids(7, 24)
  shifts = np.random.default_rng(7).integers(0, 4, (24, 2))
  batched = jax.jit(jax.vmap(A.apply_train_only, in_axes=(0, 0, None, 0)))
  for kind, name in enumerate(A.TRAIN_ONLY_NAMES):
    assert A.INVERTIBLE[name] is False
    out, out_shapes, fits = batched(padded, shapes, kind, shifts)
    for g, o, s, f, (dy, dx) in zip(
        grids, np.asarray(out), np.asarray(out_shapes), np.asarray(fits), shifts
    ):
      ref = _numpy_train_only(g, name, dy, dx)
      assert tuple(s) == ref.shape
      assert bool(f) == (max(ref.shape) <= A.SIZE)
      if f:
        np.testing.assert_array_equal(A.unpad_grid(o, s), ref)
        assert_canonical(o, s)
  assert all(A.INVERTIBLE[n] for n in A.D8_NAMES + ('colors', 'example_order'))
