"""The `common` library on hand-made grids: each function's result worked out by hand
from BARC's documented behaviour (seeds/common.py), edge cases included."""

import random

import numpy as np
import pytest

from ttt_jax.induction import common as c
from ttt_jax.induction.common import Color


def g(text: str) -> np.ndarray:
  """A grid from rows of digits ('.' is 0)."""
  return np.array([[0 if ch == '.' else int(ch) for ch in row] for row in text.split()], dtype=int)


def test_colors_include_the_prompt_names():
  assert (Color.PURPLE, Color.TEAL, Color.BROWN, Color.MAROON) == (8, 8, 9, 9)
  assert Color.GREY == Color.GRAY == 5 and Color.TRANSPARENT == Color.BACKGROUND == 0
  assert Color.ALL_COLORS == list(range(10)) and Color.NOT_BLACK == list(range(1, 10))


def test_star_import_gives_barcs_names_np_and_random():
  assert {'np', 'random', 'Color', 'blit_sprite', 'detect_objects'} <= set(c.__all__)
  assert not any(name.startswith('_') for name in c.__all__)
  assert 'ndimage' not in c.__all__ and 'RotationalSymmetry' not in c.__all__
  assert all(hasattr(c, name) for name in c.__all__)


def test_flood_fill_4_and_8():
  grid = g('1.. .1. ..1')
  c.flood_fill(grid, 0, 1, 2)  # the zeros above the diagonal (4-connected)
  assert grid.tolist() == g('122 .12 ..1').tolist()
  grid = g('1.. .1. ..1')
  c.flood_fill(grid, 0, 0, 3, connectivity=8)  # the diagonal ones
  assert grid.tolist() == g('3.. .3. ..3').tolist()
  grid = g('1.. .1. ..1')
  c.flood_fill(grid, 0, 0, 3)  # 4-connected: the corner alone
  assert grid.tolist() == g('3.. .1. ..1').tolist()
  c.flood_fill(grid, 0, 0, 3)  # same colour: nothing
  assert grid[0, 0] == 3
  with pytest.raises(AssertionError):
    c.flood_fill(grid, 0, 0, 1, connectivity=6)


def test_flood_fill_of_a_big_region_does_not_recurse():
  grid = np.zeros((30, 30), dtype=int)
  c.flood_fill(grid, 0, 0, 4)
  assert (grid == 4).all()


def test_draw_line_directions_ends_and_stops():
  grid = np.zeros((4, 5), dtype=int)
  assert c.draw_line(grid, 0, 0, length=3, direction=(1, 1), color=2) == (2, 2)
  assert c.draw_line(grid, 3, 0, end_x=3, end_y=4, color=1) == (3, 4)
  assert grid.tolist() == g('2.... .2... ..2.. 11111').tolist()
  # No length: to the edge; a longer direction vector is reduced to its signs.
  grid = np.zeros((3, 3), dtype=int)
  assert c.draw_line(grid, 0, 0, direction=(0, 5), color=7) == (0, 2)
  # Stops before a listed colour; returns the last pixel drawn.
  assert c.draw_line(grid, 2, 0, direction=(-1, 0), color=3, stop_at_color=[7]) == (1, 0)
  assert grid.tolist() == g('777 3.. 3..').tolist()
  # Start outside the grid: nothing drawn in range, the start comes back.
  assert c.draw_line(grid, 5, 5, direction=(1, 0), length=2, color=1) == (5, 5)
  with pytest.raises(AssertionError):
    c.draw_line(grid, 0.5, 0, direction=(1, 0), color=1)


def test_connected_components_order_and_content():
  grid = g('11.2 ...2 3..2')
  parts = c.find_connected_components(grid)
  # monochromatic: colour by colour (set order of 1, 2, 3), then scipy's label order
  assert [int(p.max()) for p in parts] == [1, 2, 3]
  assert parts[0].tolist() == g('11.. .... ....').tolist()
  assert all(p.shape == grid.shape and p.dtype == grid.dtype for p in parts)
  mixed = g('12 .. 34')
  assert len(c.find_connected_components(mixed, monochromatic=False)) == 2
  assert len(c.find_connected_components(g('1. .1'), connectivity=8)) == 1
  assert len(c.find_connected_components(g('1. .1'), connectivity=4)) == 2
  # Another background: its pixels are the gaps, and they fill the rest.
  parts = c.find_connected_components(g('55 15'), background=5)
  assert [p.tolist() for p in parts] == [g('55 15').tolist()]
  with pytest.raises(ValueError):
    c.find_connected_components(grid, connectivity=5)


def test_components_follow_python_set_order_not_sorted():
  # {1, 8} iterates 8 first in CPython (hash 8 -> slot 0): programs index this list.
  grid = g('1.8')
  assert list({1, 8}) == [8, 1]
  assert [int(p.max()) for p in c.find_connected_components(grid)] == [8, 1]
  assert c.object_colors(grid) == [8, 1]


def test_bounding_box_crop_and_mask():
  grid = g('.... .12. ..3. ....')
  assert c.bounding_box(grid) == (1, 1, 2, 2)
  assert c.crop(grid).tolist() == [[1, 2], [0, 3]]
  view = c.crop(grid)
  view[0, 0] = 9  # a view, as BARC's slicing gives
  assert grid[1, 1] == 9
  assert c.bounding_box_mask(grid).sum() == 4
  empty = np.zeros((2, 3), dtype=int)
  assert c.bounding_box(empty) == (2, 3, -2, -3)
  assert c.crop(empty).shape == (0, 0)
  assert c.bounding_box(g('55 51'), background=5) == (1, 1, 1, 1)


def test_object_position_anchors():
  obj = g('..... .111. .111. .....')  # box at (1, 1), 2 rows (w along x) x 3 cols
  assert c.object_position(obj) == (1, 1)
  assert c.object_position(obj, anchor='upper right') == (2, 1)  # x + w - 1
  assert c.object_position(obj, anchor='lower left') == (1, 3)  # y + h - 1
  assert c.object_position(obj, anchor='Bottom Right') == (2, 3)
  assert c.object_position(obj, anchor='center') == (1.5, 2)
  assert c.object_position(obj, anchor='top center') == (1.5, 1)
  assert isinstance(c.object_position(obj, anchor='center')[1], int)
  with pytest.raises(AssertionError):
    c.object_position(obj, anchor='middle')


def test_object_colors_keeps_numpy_scalars():
  colors = c.object_colors(g('12 21 .3'))
  assert sorted(colors) == [1, 2, 3] and isinstance(colors[0], np.integer)
  assert c.object_colors(g('12'), background=1) == [2]


def test_blit_transparency_clipping_and_aliasing():
  grid = np.full((3, 3), 5)
  sprite = g('1. 22')
  out = c.blit_sprite(grid, sprite, x=1, y=-1)  # clipped: only the last 2 lands
  assert out is grid and grid.tolist() == g('555 555 255').tolist()
  c.blit(grid, sprite, 0, 0)  # background None: zeros are copied too
  assert grid[0].tolist() == [1, 0, 5]
  obj = g('.7. ...  ...')
  assert c.blit_object(np.ones((3, 3), dtype=int), obj)[0].tolist() == [1, 7, 1]
  # A sprite that is a view of the grid is copied pixel by pixel in order (BARC's loop):
  # each pixel reads the one the previous step wrote.
  row = np.array([[1, 2, 3, 4]])
  c.blit(row, row, 0, 1)
  assert row.tolist() == [[1, 1, 1, 1]]


def test_scale_and_translate():
  assert c.scale_sprite(g('12'), 2).tolist() == g('1122 1122').tolist()
  assert c.scale_pattern(g('12'), 2).tolist() == g('1122 1122').tolist()
  moved = c.translate(g('12 34'), 1, 1, background=9)
  assert moved.tolist() == [[9, 9], [9, 1]]
  assert c.translate(g('12 34'), 0, -1).tolist() == [[2, 0], [4, 0]]
  with pytest.raises(IndexError):
    c.translate(g('12'), 0.0, 1)


def test_collision_and_contact():
  a = g('1. ..')
  b = g('.. .2')
  assert not c.collision(object1=a, object2=b)
  assert c.collision(object1=a, object2=b, x2=-1, y2=-1)  # b moved onto a
  assert not c.contact(object1=a, object2=b)  # diagonal only
  assert c.contact(object1=a, object2=b, connectivity=8)
  assert c.contact(object1=a, object2=b, x1=1)  # a moved down: edge to edge
  assert not c.collision(object1=a, object2=b, x1=5)
  with pytest.raises(ValueError):
    c.contact(object1=a, object2=b, connectivity=3)


def test_object_interior_boundary_neighbors():
  ring = g('..... .111. .1.1. .111. .....')
  interior = c.object_interior(ring)
  assert interior.sum() == 9 and interior[2, 2]  # the hole counts as inside
  boundary = c.object_boundary(ring)
  assert boundary.sum() == 8 and not boundary[2, 2]
  neighbors4 = c.object_neighbors(ring)
  assert neighbors4.sum() == 12 + 1 and neighbors4[2, 2] and not neighbors4[0, 0]
  assert c.object_neighbors(ring, connectivity=8)[0, 0]
  # A pixel on the canvas edge is boundary even with no exterior next to it.
  assert c.object_boundary(g('11 11')).all()


def test_is_contiguous():
  assert c.is_contiguous(g('11 .1'))
  assert not c.is_contiguous(g('1. .1'))
  assert c.is_contiguous(g('1. .1'), connectivity=8)
  assert not c.is_contiguous(np.zeros((2, 2), dtype=int))


def test_check_between_objects():
  a = g('11... 11... ..... .....')
  b = g('...11 ...11 ..... .....')
  assert c.check_between_objects(a, b, 0, 2)  # along y between them, rows 0-1
  assert not c.check_between_objects(a, b, 2, 2)  # below both
  assert not c.check_between_objects(a, b, 0, 2, padding=1)  # too close to the edge


def test_symmetries_apply_and_orbit():
  t = c.TranslationalSymmetry(2, 0)
  assert (
      t.apply(1, 1, 2) == (5, 1) and str(t) == 'TranslationalSymmetry(translate_x=2, translate_y=0)'
  )
  m = c.MirrorSymmetry(1.5, None)
  assert m.apply(0, 4) == (3, 4) and m.apply(0, 4, iters=2) == (0, 4)
  r = c.RotationalSymmetry(1, 1)
  assert r.apply(0, 1) == (1, 2) and r.apply(0, 1, iters=4) == (0, 1)
  assert r.apply(0, 1, iters=-1) == (0, 1)  # BARC: a negative count does not turn
  assert c.MirrorSymmetry(0.5, None).apply(np.array([0, 1]), np.array([3, 3]))[0].tolist() == [1, 0]
  grid = np.zeros((4, 2), dtype=int)
  assert sorted(c.orbit(grid, 0, 1, [t])) == [(0, 1), (2, 1)]
  assert sorted(c.orbit(grid, 0, 0, [c.MirrorSymmetry(1.5, None)])) == [(0, 0), (3, 0)]


def test_detect_mirror_symmetry():
  grid = g('1221 3..3')
  found = c.detect_mirror_symmetry(grid)
  assert [str(s) for s in found] == ['MirrorSymmetry(mirror_x=None, mirror_y=1.5)']
  # No mirror maps pixels onto each other here; an axis on an edge row (or column) keeps
  # that row in place and throws the other off the canvas: 2 - 0.02, a four-way tie.
  tied = c.detect_mirror_symmetry(g('12 34'))
  assert sorted(str(s) for s in tied) == [
      'MirrorSymmetry(mirror_x=0, mirror_y=None)',
      'MirrorSymmetry(mirror_x=1, mirror_y=None)',
      'MirrorSymmetry(mirror_x=None, mirror_y=0)',
      'MirrorSymmetry(mirror_x=None, mirror_y=1)',
  ]


def test_detect_translational_symmetry():
  grid = g('121212 343434')
  found = c.detect_translational_symmetry(grid)
  # ties prefer the largest negative step (BARC's key: score, then -translate)
  assert [str(s) for s in found] == ['TranslationalSymmetry(translate_x=0, translate_y=-2)']
  assert c.detect_translational_symmetry(g('12 34')) == []


def test_detect_rotational_symmetry():
  grid = g('1.2 ... 2.1')
  assert c.detect_rotational_symmetry(grid) is None  # a half turn only
  found = c.detect_rotational_symmetry(g('121 2.2 121'))
  assert (found.center_x, found.center_y) == (1, 1)
  assert found.apply(0, 1) == (1, 2)


def test_apply_symmetry_and_diagonal():
  sprite = g('1. .. .2')
  assert c.apply_symmetry(sprite, 'horizontal').tolist() == g('12 .. 12').tolist()
  assert c.apply_symmetry(g('1..'), 'vertical').tolist() == g('1.1').tolist()
  with pytest.raises(ValueError):
    c.apply_symmetry(g('1'), 'radial')
  square = g('.1 2.')
  assert c.apply_diagonal_symmetry(square).tolist() == g('.1 1.').tolist()  # above wins
  with pytest.raises(ValueError):
    c.apply_diagonal_symmetry(g('12'))


def test_detect_objects_components_windows_and_overlap():
  grid = g('11.2 11.2 .... 3...')
  objs = c.detect_objects(grid, connectivity=4, monochromatic=True)
  assert sorted(int(o.max()) for o in objs) == [1, 2, 3]
  assert int(objs[0].max()) == 1  # the largest box first
  only_small = c.detect_objects(grid, connectivity=4, predicate=lambda s: s.size == 1)
  assert [int(o.max()) for o in only_small] == [3]
  coloured = c.detect_objects(grid, connectivity=4, colors=[2])
  assert [int(o.max()) for o in coloured] == [2]
  # Windows of an allowed size: components are dropped (their arrays are grid-sized),
  # every 2x2 window holding a pixel is a candidate, and a non-overlapping set covering
  # the most pixels is kept.
  windows = c.detect_objects(g('11 11'), allowed_dimensions=[(1, 2)])
  assert [o.tolist() for o in windows] == [g('11 ..').tolist(), g('.. 11').tolist()]
  assert len(c.detect_objects(g('11 11'), allowed_dimensions=[(1, 2)], can_overlap=True)) == 2
  assert c.detect_objects(grid) == []  # no connectivity, no dimensions: nothing


def test_random_helpers_draw_like_barc():
  # Same calls, same order: seeded draws agree with the stdlib/numpy sequences BARC makes.
  random.seed(3)
  expect = random.choice([(x, y) for x in range(0, 3) for y in range(0, 2)])
  random.seed(3)
  grid = g('... ... ...')
  assert c.random_free_location_for_sprite(grid, g('11 11')) == expect
  with pytest.raises(ValueError):
    c.random_free_location_for_sprite(g('1.. ... ...'), g('111 111 111'))
  busy = g('..... ..1.. .....')
  for _ in range(20):
    x, y = c.random_free_location_for_sprite(busy, g('1'), padding=1)
    assert abs(x - 1) + abs(y - 2) > 1 and not (abs(x - 1) <= 1 and abs(y - 2) <= 1)
  random.seed(0)
  spaced = c.randomly_spaced_indices(12, 3, border_size=1, padding=1)
  assert len(spaced) == 3 and np.all(np.diff(spaced) >= 2) and spaced.min() >= 1
  np.random.seed(0)
  scattered = c.randomly_scatter_points(np.zeros((4, 4), dtype=int), 6, density=0.25)
  assert (scattered == 6).sum() == 4


@pytest.mark.parametrize(
    'symmetry', ['horizontal', 'vertical', 'not_symmetric', 'mirror', 'diagonal', 'radial']
)
def test_random_sprite_is_contiguous_touches_all_sides(symmetry):
  random.seed(1)
  sprite = c.random_sprite(4, 4, symmetry=symmetry, color_palette=[3])
  assert sprite.shape == (4, 4) and c.is_contiguous(sprite)
  assert 3 in sprite and set(np.unique(sprite)) <= {0, 3}
  assert all((edge != 0).any() for edge in (sprite[0], sprite[-1], sprite[:, 0], sprite[:, -1]))
  if symmetry == 'horizontal':
    assert (sprite == sprite[::-1]).all()
  if symmetry == 'diagonal':
    assert (sprite == sprite.T).all() or (sprite == np.rot90(sprite, 2).T).all()
  if symmetry == 'radial':
    assert (sprite == np.rot90(sprite)).all()
