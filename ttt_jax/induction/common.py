"""`common`: the helper library that BARC's induction model writes its programs against.

Programs start `from common import *` and call these names. The API (names,
arguments, defaults, return values, edge cases, and the order in which lists
come back, which programs index into) is that of BARC's seeds/common.py,
learned from its documentation and behaviour; the code is our own, vectorized
with numpy and scipy.ndimage where the reference loops cell by cell. Where
BARC's helpers draw random numbers, ours make the same calls to `random` /
`np.random` in the same order, so a seeded run draws the same values.

Grids are numpy arrays indexed `grid[x, y]`: x the row, y the column (BARC's
convention). Colours are ints 0-9 (`Color`). The sandbox hands programs this
module under the import name `common`; `from common import *` gives the names
in `__all__` (BARC's public names, `np` and `random` among them).

Deliberate differences: flood fills are not recursive, so a large region
cannot hit Python's recursion limit (BARC's recursive fill can); `Color` also
has PURPLE (= TEAL, 8) and BROWN (= MAROON, 9), the colour words the induction
model's prompt uses; `show_colored_grid` prints text only (no matplotlib).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    'Color',
    'MirrorSymmetry',
    'Symmetry',
    'TranslationalSymmetry',
    'apply_diagonal_symmetry',
    'apply_symmetry',
    'blit',
    'blit_object',
    'blit_sprite',
    'bounding_box',
    'bounding_box_mask',
    'check_between_objects',
    'collision',
    'contact',
    'crop',
    'detect_mirror_symmetry',
    'detect_objects',
    'detect_rotational_symmetry',
    'detect_translational_symmetry',
    'draw_line',
    'find_connected_components',
    'flood_fill',
    'generate_sprite',
    'is_contiguous',
    'np',
    'object_boundary',
    'object_colors',
    'object_interior',
    'object_neighbors',
    'object_position',
    'orbit',
    'random',
    'random_free_location_for_object',
    'random_free_location_for_sprite',
    'random_sprite',
    'randomly_scatter_points',
    'randomly_spaced_indices',
    'scale_pattern',
    'scale_sprite',
    'show_colored_grid',
    'translate',
    'visualize',
]


class Color:
  """The ten ARC colours as ints, under BARC's names and the induction prompt's."""

  BLACK = 0
  BLUE = 1
  RED = 2
  GREEN = 3
  YELLOW = 4
  GREY = 5
  GRAY = 5
  PINK = 6
  ORANGE = 7
  TEAL = 8
  PURPLE = 8  # the prompt's word for 8
  MAROON = 9
  BROWN = 9  # the prompt's word for 9
  TRANSPARENT = 0
  BACKGROUND = 0

  ALL_COLORS = [BLACK, BLUE, RED, GREEN, YELLOW, GREY, PINK, ORANGE, TEAL, MAROON]
  NOT_BLACK = [BLUE, RED, GREEN, YELLOW, GREY, PINK, ORANGE, TEAL, MAROON]


def _structure(connectivity: int, what: str = 'Connectivity') -> np.ndarray:
  """The 4- or 8-neighbourhood (centre included) as a scipy structuring element."""
  if connectivity == 4:
    return ndimage.generate_binary_structure(2, 1)
  if connectivity == 8:
    return ndimage.generate_binary_structure(2, 2)
  raise ValueError(f'{what} must be 4 or 8.')


def _colors_in_set_order(grid: np.ndarray, background: Any) -> set:
  """The grid's colours minus the background, as the set BARC iterates over.

  The iteration order of a set of small ints depends on the order in which they
  were first inserted, and programs index the component lists built from it, so
  it is built the same way: cells in row-major order.
  """
  return set(grid.flatten().tolist()) - {background}


# ------------------------------------------------------------------ drawing


def flood_fill(grid, x, y, color, connectivity=4):
  """Fills the region of `grid[x, y]`'s colour that contains (x, y) with `color`, in place.

  connectivity: 4 (edges) or 8 (edges and corners).
  """
  old_color = grid[x, y]
  assert connectivity in [4, 8], 'flood_fill: Connectivity must be 4 or 8.'
  if old_color == color:
    return
  labels, _ = ndimage.label(grid == old_color, _structure(connectivity))
  grid[labels == labels[x, y]] = color


def draw_line(
    grid, x, y, end_x=None, end_y=None, length=None, direction=None, color=None, stop_at_color=[]
):  # pylint: disable=dangerous-default-value (BARC's signature)
  """Draws a line from (x, y), in place; returns the last point drawn.

  The line runs to (end_x, end_y), or `length` pixels along `direction` (each
  component -1, 0 or 1; a longer vector is reduced to its signs), or until it
  leaves the grid when `length` is None. It stops before a pixel whose colour
  is in `stop_at_color`. Pixels outside the grid are skipped, not drawn.
  """
  assert (end_x is None) == (
      end_y is None
  ), 'draw_line: Either both or neither of end_x and end_y must be specified.'
  assert x == int(x) and y == int(y), 'draw_line: x and y must be integers.'
  x, y = int(x), int(y)
  if end_x is not None and end_y is not None:
    length = max(abs(end_x - x), abs(end_y - y)) + 1
    direction = (end_x - x, end_y - y)
  if length is None:
    length = max(grid.shape) * 2
  dx, dy = direction
  if abs(dx) > 0:
    dx = dx // abs(dx)
  if abs(dy) > 0:
    dy = dy // abs(dy)
  stop_x, stop_y = x, y
  for i in range(length):
    px, py = x + i * dx, y + i * dy
    if 0 <= px < grid.shape[0] and 0 <= py < grid.shape[1]:
      if grid[px, py] in stop_at_color:
        break
      grid[px, py] = color
      stop_x, stop_y = px, py
  return stop_x, stop_y


def _inside(grid: np.ndarray, x: int, y: int, shape: tuple[int, ...]):
  """Slices (grid window, sprite window) where a sprite of `shape` at (x, y) overlaps grid."""
  x0, y0 = max(x, 0), max(y, 0)
  x1, y1 = min(x + shape[0], grid.shape[0]), min(y + shape[1], grid.shape[1])
  if x0 >= x1 or y0 >= y1:
    return None
  return (slice(x0, x1), slice(y0, y1)), (slice(x0 - x, x1 - x), slice(y0 - y, y1 - y))


def blit(grid, sprite, x=0, y=0, background=None):
  """Copies `sprite` into `grid` with its corner at (x, y), in place; returns `grid`.

  Pixels of the sprite equal to `background` (when given) are transparent;
  pixels that fall outside the grid are dropped.
  """
  x, y = int(x), int(y)
  if np.may_share_memory(grid, sprite):  # a view of the grid: copy pixel by pixel, in order
    for i, j in itertools.product(range(sprite.shape[0]), range(sprite.shape[1])):
      if background is None or sprite[i, j] != background:
        if 0 <= x + i < grid.shape[0] and 0 <= y + j < grid.shape[1]:
          grid[x + i, y + j] = sprite[i, j]
    return grid
  windows = _inside(grid, x, y, sprite.shape)
  if windows is None:
    return grid
  into, part = windows
  piece = sprite[part]
  if background is None:
    grid[into] = piece
  else:
    opaque = piece != background
    grid[into][opaque] = piece[opaque]
  return grid


def blit_object(grid, obj, background=Color.BLACK):
  """Draws a grid-sized object onto `grid` where it lies (its non-background pixels)."""
  return blit(grid, obj, x=0, y=0, background=background)


def blit_sprite(grid, sprite, x, y, background=Color.BLACK):
  """Draws a sprite's non-background pixels onto `grid` with its corner at (x, y)."""
  return blit(grid, sprite, x=x, y=y, background=background)


def scale_pattern(pattern, scale_factor):
  """Deprecated name of `scale_sprite` (each pixel becomes a factor x factor block)."""
  return np.repeat(np.repeat(pattern, scale_factor, axis=0), scale_factor, axis=1)


def scale_sprite(sprite, factor):
  """Each pixel of `sprite` becomes a factor x factor block."""
  return np.kron(sprite, np.ones((factor, factor), dtype=sprite.dtype))


def translate(obj, x, y, background=Color.BLACK):
  """A copy of `obj` moved by (x, y) on a canvas of its size; vacated pixels get `background`."""
  if not isinstance(x, (int, np.integer)) or not isinstance(y, (int, np.integer)):
    raise IndexError('translate: x and y must be integers')
  n, m = obj.shape
  moved = np.zeros((n, m), dtype=obj.dtype)
  moved[:, :] = background
  windows = _inside(moved, x, y, obj.shape)
  if windows is not None:
    into, part = windows
    moved[into] = obj[part]
  return moved


# --------------------------------------------------------- objects and boxes


def find_connected_components(grid, background=Color.BLACK, connectivity=4, monochromatic=True):
  """The connected components of the non-background pixels, each a grid-sized array
  holding its pixels on `background`.

  monochromatic: one colour per component (components of each colour in turn,
  colours in BARC's set order); else any non-background pixels connect.
  connectivity: 4 or 8. Components come in scipy.ndimage.label's order.
  """
  structure = _structure(connectivity)

  def components(mask):
    labels, count = ndimage.label(mask, structure)
    return [grid * (labels == k) + background * (labels != k) for k in range(1, count + 1)]

  if not monochromatic:
    return components(grid != background)
  return [c for color in _colors_in_set_order(grid, background) for c in components(grid == color)]


def bounding_box(grid, background=Color.BLACK):
  """(x, y, width, height) of the non-background pixels; width runs along x.

  With no such pixel: (rows, cols, -rows, -cols), as BARC returns.
  """
  n, m = grid.shape
  xs, ys = np.nonzero(grid != background)
  if xs.size == 0:
    return n, m, -n, -m
  x0, y0 = int(xs.min()), int(ys.min())
  return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def bounding_box_mask(grid, background=Color.BLACK):
  """A bool grid, True inside the bounding box of the non-background pixels."""
  mask = np.zeros_like(grid, dtype=bool)
  x, y, w, h = bounding_box(grid, background=background)
  mask[x : x + w, y : y + h] = True
  return mask


_ANCHORS = {  # anchor -> (fraction of (w - 1) added to x, fraction of (h - 1) added to y)
    'upperleft': (0, 0),
    'upperright': (1, 0),
    'lowerleft': (0, 1),
    'lowerright': (1, 1),
    'center': (0.5, 0.5),
    'uppercenter': (0.5, 0),
    'lowercenter': (0.5, 1),
    'leftcenter': (0, 0.5),
    'rightcenter': (1, 0.5),
}


def object_position(obj, background=Color.BLACK, anchor='upper left'):
  """(x, y) of a point of the object's bounding box: 'upper left' (default), 'upper
  right', 'lower left', 'lower right', 'center', 'upper center', 'lower center',
  'left center', 'right center' ('top'/'bottom' also accepted). Halves stay floats.
  """
  key = anchor.lower().replace(' ', '').replace('top', 'upper').replace('bottom', 'lower')
  assert key in _ANCHORS, 'Invalid anchor'
  x, y, w, h = bounding_box(obj, background=background)
  fx, fy = _ANCHORS[key]
  px, py = x + (w - 1) * fx, y + (h - 1) * fy
  if abs(px - int(px)) < 1e-6:
    px = int(px)
  if abs(py - int(py)) < 1e-6:
    py = int(py)
  return px, py


def object_colors(obj, background=Color.BLACK):
  """The colours of the object's non-background pixels (a list, in set order)."""
  return list(set(obj.flatten()) - {background})


def crop(grid, background=Color.BLACK):
  """The bounding box of the non-background pixels: a view of `grid`, not a copy."""
  x, y, w, h = bounding_box(grid, background)
  return grid[x : x + w, y : y + h]


def _placed_pixels(obj1, obj2, x1, y1, x2, y2, background):
  """Object 1's non-background pixels in object 2's frame, and object 2's mask."""
  dx, dy = int(x2 - x1), int(y2 - y1)
  return np.argwhere(obj1 != background) - (dx, dy), obj2 != background


def _any_set(mask: np.ndarray, points: np.ndarray) -> bool:
  """Whether `mask` is True at any of the points [P, 2] that lie inside it."""
  inside = np.all((points >= 0) & (points < mask.shape), axis=1)
  points = points[inside]
  return bool(np.any(mask[points[:, 0], points[:, 1]]))


def collision(_=None, object1=None, object2=None, x1=0, y1=0, x2=0, y2=0, background=Color.BLACK):
  """Whether object1 at (x1, y1) and object2 at (x2, y2) share a non-background pixel."""
  return _any_set(*_placed_pixels(object1, object2, x1, y1, x2, y2, background)[::-1])


def contact(
    _=None,
    object1=None,
    object2=None,
    x1=0,
    y1=0,
    x2=0,
    y2=0,
    background=Color.BLACK,
    connectivity=4,
):
  """Whether the objects overlap or touch (share an edge, or with connectivity 8 a
  corner) when object1 is at (x1, y1) and object2 at (x2, y2)."""
  points, mask2 = _placed_pixels(object1, object2, x1, y1, x2, y2, background)
  steps = np.argwhere(_structure(connectivity)) - 1  # the pixel itself and its neighbours
  return _any_set(mask2, (points[:, None, :] + steps[None]).reshape(-1, 2))


def check_between_objects(obj1, obj2, x, y, padding=0, background=Color.BLACK):
  """Whether pixel (x, y) lies in the straight corridor between two objects (the
  span where their boxes face each other), at least `padding` from the corridor's
  sides."""

  def boxes(axis):
    first, second = sorted([obj1, obj2], key=lambda o: object_position(o)[axis])
    return bounding_box(first, background=background), bounding_box(second, background=background)

  def between(a, b, along, across, lo, hi):
    # a, b: (start, length) of the boxes along the corridor; lo, hi: their sides across it.
    return a[0] + a[1] <= along < b[0] and across - padding >= lo and across + padding < hi

  (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes(0)
  lo, hi = max(y1, y2), min(y1 + h1, y2 + h2)
  if between((x1, w1), (x2, w2), x, y, lo, hi) or between((x2, w2), (x1, w1), x, y, lo, hi):
    return True
  (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes(1)
  lo, hi = max(x1, x2), min(x1 + w1, x2 + w2)
  return between((y1, h1), (y2, h2), y, x, lo, hi) or between((y2, h2), (y1, h1), y, x, lo, hi)


def _exterior(grid, background):
  """Background pixels 4-connected to the grid's edge through background pixels."""
  labels, _ = ndimage.label(grid == background, _structure(4))
  edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
  return np.isin(labels, edge[edge > 0])


def object_interior(grid, background=Color.BLACK):
  """A bool grid: the object's pixels and the background it encloses (not reachable
  from the grid's edge through background, 4-connected)."""
  return ~_exterior(grid, background)


def object_boundary(grid, background=Color.BLACK):
  """A bool grid: the object's pixels that touch the exterior (4-neighbours) or lie on
  the grid's edge."""
  exterior = _exterior(grid, background)
  edge = np.zeros_like(grid, dtype=bool)
  edge[[0, -1], :] = True
  edge[:, [0, -1]] = True
  return (grid != background) & (ndimage.binary_dilation(exterior) | edge)


def object_neighbors(grid, background=Color.BLACK, connectivity=4):
  """A bool grid: background pixels next to the object's boundary (4 or 8 neighbours)."""
  boundary = object_boundary(grid, background)
  ring = _structure(connectivity).copy()
  ring[1, 1] = False
  return ndimage.binary_dilation(boundary, structure=ring) & (grid == background)


def is_contiguous(bitmask, background=Color.BLACK, connectivity=4):
  """Whether the non-background pixels form exactly one connected component."""
  _, count = ndimage.label(bitmask != background, _structure(connectivity))
  return count == 1


# --------------------------------------------------------------- symmetries


def _as_cells(x, y):
  """Coordinates after a symmetry: arrays truncated to int, floats rounded (as BARC)."""
  if isinstance(x, np.ndarray):
    x = x.astype(int)
  if isinstance(y, np.ndarray):
    y = y.astype(int)
  if isinstance(x, float):
    x = int(round(x))
  if isinstance(y, float):
    y = int(round(y))
  return x, y


class Symmetry:
  """A transformation of grid coordinates; `apply(x, y, iters)` maps a point."""

  def apply(self, x, y, iters=1):
    """(x, y) transformed `iters` times."""


class TranslationalSymmetry(Symmetry):
  """Translation by (translate_x, translate_y), repeated `iters` times (negative: back)."""

  def __init__(self, translate_x, translate_y):
    self.translate_x, self.translate_y = translate_x, translate_y

  def apply(self, x, y, iters=1):
    return _as_cells(x + iters * self.translate_x, y + iters * self.translate_y)

  def __repr__(self):
    return f'TranslationalSymmetry(translate_x={self.translate_x}, translate_y={self.translate_y})'

  __str__ = __repr__

  def _iter_range(self, grid_shape):
    top = 0
    if self.translate_x != 0:
      top = math.ceil(grid_shape[0] / abs(self.translate_x))
    if self.translate_y != 0:
      top = max(top, math.ceil(grid_shape[1] / abs(self.translate_y)))
    return (-top, top + 1)


class MirrorSymmetry:
  """Reflection across row `mirror_x` and/or column `mirror_y` (None: that axis is kept)."""

  def __init__(self, mirror_x, mirror_y):
    self.mirror_x, self.mirror_y = mirror_x, mirror_y

  def apply(self, x, y, iters=1):
    if iters % 2 == 0:
      return x, y
    if self.mirror_x is not None:
      x = 2 * self.mirror_x - x
    if self.mirror_y is not None:
      y = 2 * self.mirror_y - y
    return _as_cells(x, y)

  def __repr__(self):
    return f'MirrorSymmetry(mirror_x={self.mirror_x}, mirror_y={self.mirror_y})'

  __str__ = __repr__

  def _iter_range(self, grid_shape):
    return (0, 2)


class RotationalSymmetry(Symmetry):
  """Quarter turns about (center_x, center_y): (x, y) -> (y, -x) about the centre per
  turn. As in BARC, a negative `iters` leaves the point where it is."""

  def __init__(self, center_x, center_y):
    self.center_x, self.center_y = center_x, center_y

  def apply(self, x, y, iters=1):
    x, y = x - self.center_x, y - self.center_y
    for _ in range(iters):
      x, y = y, -x
    return _as_cells(x + self.center_x, y + self.center_y)

  def _iter_range(self, grid_shape):
    return (0, 4)


def orbit(grid, x, y, symmetries):
  """The points (x, y) reaches under every combination of the symmetries' repeats,
  keeping only paths that stay inside `grid` (a list, in set order)."""
  reached = []
  ranges = [range(*s._iter_range(grid.shape)) for s in symmetries]  # pylint: disable=protected-access
  for repeats in itertools.product(*ranges):
    px, py = x, y
    for symmetry, k in zip(symmetries, repeats):
      px, py = symmetry.apply(px, py, k)
      if not (0 <= px < grid.shape[0] and 0 <= py < grid.shape[1]):
        break
    else:
      reached.append((px, py))
  return list(set(reached))


class _SymmetryScore:
  """How well symmetries fit one grid: (pixels mapped onto their own colour, pixels
  mapped off the canvas, pixels mapped onto a different colour that is not ignored),
  over the pixels not ignored (nor `background`). The pixels are found once for the
  many candidates a detector tries."""

  def __init__(self, grid, ignore_colors, background=None):
    self.grid = grid
    self.ignored = np.isin(grid, ignore_colors)
    kept = ~self.ignored if background is None else ~self.ignored & (grid != background)
    self.points = np.argwhere(kept)
    self.colors = grid[kept]  # the same row-major order as argwhere

  def __call__(self, symmetry):
    tx, ty = symmetry.apply(self.points[:, 0], self.points[:, 1])
    inside = (tx >= 0) & (tx < self.grid.shape[0]) & (ty >= 0) & (ty < self.grid.shape[1])
    tx, ty = tx[inside], ty[inside]
    same = self.colors[inside] == self.grid[tx, ty]
    conflict = np.sum(~same & ~self.ignored[tx, ty])
    return np.sum(same), np.sum(~inside), conflict


def detect_translational_symmetry(grid, ignore_colors=[Color.BLACK], background=None):  # pylint: disable=dangerous-default-value
  """The best translation along x and the best along y that map every pixel (not in
  `ignore_colors`, not `background`) onto its own colour; if neither exists, the best
  diagonal one. A list of TranslationalSymmetry (possibly empty)."""
  n, m = grid.shape
  along_x = [TranslationalSymmetry(t, 0) for t in range(1, n)]
  along_x += [TranslationalSymmetry(-t, 0) for t in range(1, n)]
  along_y = [TranslationalSymmetry(0, t) for t in range(1, m)]
  along_y += [TranslationalSymmetry(0, -t) for t in range(1, m)]
  diagonal = [TranslationalSymmetry(tx, ty) for tx in range(1, n) for ty in range(1, m)]

  fit = _SymmetryScore(grid, ignore_colors, background)

  def positive(candidates):
    scored = []
    for symmetry in candidates:
      same, off, conflict = fit(symmetry)
      score = same - 0.01 * off - 100000 * conflict
      if score > 0:
        scored.append((symmetry, score))
    return scored

  found = []
  for candidates, axis in ((along_x, 'translate_x'), (along_y, 'translate_y')):
    scored = positive(candidates)
    if scored:
      found.append(max(scored, key=lambda s, a=axis: (s[1], -getattr(s[0], a)))[0])
  if not found:
    scored = positive(diagonal)
    if scored:
      found.append(max(scored, key=lambda s: (s[1], -s[0].translate_x - s[0].translate_y))[0])
  return found


def detect_mirror_symmetry(grid, ignore_colors=[Color.BLACK], background=None):  # pylint: disable=dangerous-default-value
  """The best-scoring mirror symmetries (all ties) with no conflicting pixel: axes
  across rows, across columns, or both, on a pixel or between two (x.5)."""
  n, m = grid.shape
  halves = [0, 0.5]
  candidates = [MirrorSymmetry(x + z, None) for x in range(n) for z in halves]
  candidates += [MirrorSymmetry(None, y + z) for y in range(m) for z in halves]
  candidates += [MirrorSymmetry(x + z, y + z) for x in range(n) for y in range(m) for z in halves]
  fit = _SymmetryScore(grid, ignore_colors, background)
  best, best_score = [], 0
  for symmetry in candidates:
    same, off, conflict = fit(symmetry)
    score = same - 0.01 * off - 10000 * conflict
    if conflict > 0 or same == 0:
      continue
    if score > best_score:
      best, best_score = [symmetry], score
    elif score == best_score:
      best.append(symmetry)
  return best


def detect_rotational_symmetry(grid, ignore_colors=[Color.BLACK], background=None):  # pylint: disable=dangerous-default-value
  """The best quarter-turn symmetry (a RotationalSymmetry, centre on a pixel or a pixel
  corner), or None when none scores above zero."""
  n, m = grid.shape
  fit = _SymmetryScore(grid, ignore_colors, background)
  best, best_score = None, 0
  for cx, cy, z in itertools.product(range(n), range(m), [0, 0.5]):
    symmetry = RotationalSymmetry(cx + z, cy + z)
    same, off, conflict = fit(symmetry)
    score = same - 5 * off - 1000 * conflict
    if score > best_score:
      best, best_score = symmetry, score
  return best


def apply_symmetry(sprite, symmetry_type, background=Color.BLACK):
  """Makes `sprite` mirror-symmetric in place ('horizontal': top/bottom halves,
  'vertical': left/right), a pixel's colour winning over background; returns it."""
  if symmetry_type == 'horizontal':
    view = sprite
  elif symmetry_type == 'vertical':
    view = sprite.T
  else:
    raise ValueError(f'Invalid symmetry type {symmetry_type}.')
  half = view.shape[0] // 2
  near, far = view[:half], view[::-1][:half]
  merged = np.where(near != background, near, far)
  near[...] = merged
  far[...] = merged
  return sprite


def apply_diagonal_symmetry(sprite, background=Color.BLACK):
  """Makes a square sprite symmetric about its main diagonal in place (a pixel above
  the diagonal wins over its mirror below); returns it."""
  n, m = sprite.shape
  if n != m:
    raise ValueError('Diagonal symmetry requires a square sprite.')
  upper = np.triu(np.ones((n, n), dtype=bool), k=1)
  above, below = sprite[upper], sprite.T[upper]
  merged = np.where(above != background, above, np.where(below != background, below, background))
  sprite[upper] = merged
  sprite.T[upper] = merged
  return sprite


# ------------------------------------------------------- random generation


def randomly_scatter_points(grid, color, density=0.5, background=Color.BLACK):
  """Colours random background pixels until `density` of the grid was coloured; in place."""
  colored = 0
  n, m = grid.shape
  while colored < density * n * m:
    x = np.random.randint(0, n)
    y = np.random.randint(0, m)
    if grid[x, y] == background:
      grid[x, y] = color
      colored += 1
  return grid


def randomly_spaced_indices(max_len, n_indices, border_size=1, padding=1):
  """`n_indices` random sorted indices in range(max_len), at least `padding` apart and
  `border_size` from the start (BARC's arithmetic for the end)."""
  if border_size > 0:
    inner = randomly_spaced_indices(max_len - border_size - 2, n_indices, 0, padding)
    return inner + border_size
  taken = [0] * max_len
  while sum(taken) < n_indices:
    free = [
        i
        for i in range(max_len)
        if sum(taken[max(0, i - padding) : min(i + 1 + padding, max_len)]) == 0
    ]
    taken[random.choice(free)] = 1
  return np.argwhere(taken).flatten()


def random_free_location_for_sprite(
    grid, sprite, background=Color.BLACK, border_size=0, padding=0, padding_connectivity=8
):
  """A random (x, y) where `sprite` can be blitted without touching the grid's
  non-background pixels (grown by `padding`), at least `border_size` from the edges.
  Raises ValueError when there is none."""
  n, m = grid.shape
  h, w = sprite.shape
  occupied = grid != background
  if padding > 0:
    occupied = ndimage.binary_dilation(
        occupied,
        iterations=padding,
        structure=_structure(padding_connectivity, 'padding_connectivity'),
    )
  xs = range(border_size, n + 1 - border_size - h)
  ys = range(border_size, m + 1 - border_size - w)
  free = []
  if len(xs) and len(ys):
    windows = np.lib.stride_tricks.sliding_window_view(occupied, (h, w))
    overlap = np.einsum(
        'ijkl,kl->ij', windows.astype(np.int32), (sprite != background).astype(np.int32)
    )
    free = [(x, y) for x in xs for y in ys if overlap[x, y] == 0]
  if not free:
    raise ValueError('No free location for sprite found.')
  return random.choice(free)


def random_free_location_for_object(*args, **kwargs):
  """Old name of `random_free_location_for_sprite`."""
  return random_free_location_for_sprite(*args, **kwargs)


# The random walk's steps, in BARC's order (random.choice indexes into it): the first
# four for 4-connectivity, all eight for 8.
_WALK_STEPS = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)]


def generate_sprite(
    n,
    m,
    symmetry_type,
    fill_percentage=0.5,
    max_colors=9,
    color_palate=None,
    connectivity=4,
    background=Color.BLACK,
):
  """A random n x m sprite drawn by a random walk, with the given symmetry
  ('not_symmetric', 'horizontal', 'vertical', 'diagonal', 'mirror', 'radial');
  the random draws are BARC's, call for call."""
  if color_palate is None:
    n_colors = 1
    while n_colors < max_colors and random.random() < 0.3:
      n_colors += 1
    color_palate = random.sample([c for c in Color.ALL_COLORS if c != background], n_colors)
  else:
    n_colors = len(color_palate)
  full_n, full_m = n, m
  flip = False
  if symmetry_type == 'not_symmetric':
    x, y = random.randint(0, n - 1), random.randint(0, m - 1)
  elif symmetry_type == 'horizontal':
    x, y = random.randint(0, n - 1), m // 2
  elif symmetry_type == 'vertical':
    x, y = n // 2, random.randint(0, m - 1)
  elif symmetry_type == 'diagonal':
    flip = random.choice([True, False])
    x = random.randint(0, n - 1)
    y = x if flip else n - 1 - x
  elif symmetry_type == 'mirror':  # draw one quadrant
    n, m = int(n / 2 + 0.5), int(m / 2 + 0.5)
    x, y = random.randint(0, n - 1), random.randint(0, m - 1)
  elif symmetry_type == 'radial':  # one quadrant, from the corner that becomes the centre
    assert n == m, 'Radial symmetry requires a square grid.'
    n, m = int(n / 2 + 0.5), int(m / 2 + 0.5)
    x, y = n - 1, m - 1
  else:
    raise ValueError(f'Invalid symmetry type {symmetry_type}.')
  _structure(connectivity)  # the same error for a bad connectivity
  steps = _WALK_STEPS[:connectivity]

  grid = np.full((n, m), background)
  color_index = 0
  while np.sum(grid != background) < fill_percentage * n * m:
    grid[x, y] = color_palate[color_index]
    if random.random() < 0.33:
      color_index = random.choice(range(n_colors))
    dx, dy = random.choice(steps)
    if 0 <= x + dx < n and 0 <= y + dy < m:
      x, y = x + dx, y + dy

  if symmetry_type in ('horizontal', 'vertical'):
    return apply_symmetry(grid, symmetry_type, background)
  if symmetry_type == 'diagonal':
    if flip:
      return np.flipud(apply_diagonal_symmetry(np.flipud(grid), background))
    return apply_diagonal_symmetry(grid, background)
  if symmetry_type == 'radial':
    full = np.full((full_n, full_n), background)
    blit(full, grid, background=background)
    for _ in range(3):
      blit(full, np.rot90(full), background=background)
    return full
  if symmetry_type == 'mirror':
    full = np.full((full_n, full_m), background)
    top, left = n - full_n % 2, m - full_m % 2  # an odd side shares its middle line
    full[:n, :m] = grid
    full[top:, :m] = np.flipud(grid)
    full[:n, left:] = np.fliplr(grid)
    full[top:, left:] = np.flipud(np.fliplr(grid))
    if not is_contiguous(full, background=background, connectivity=connectivity):
      return generate_sprite(
          n=full_n,
          m=full_m,
          symmetry_type=symmetry_type,
          fill_percentage=fill_percentage,
          color_palate=color_palate,
          connectivity=connectivity,
          background=background,
      )
    return full
  return grid


def random_sprite(
    n, m, density=0.5, symmetry=None, color_palette=None, connectivity=4, background=Color.BLACK
):
  """A random connected sprite of n x m (n, m: ints, lists or ranges to pick from)
  touching all four sides. symmetry: 'horizontal', 'vertical', 'diagonal', 'radial',
  'mirror', 'not_symmetric', or None for a random one; color_palette: the colours
  to use (None: random). Regenerates until the sprite touches every side."""
  sizes_n = list(n) if isinstance(n, (range, list)) else [n]
  sizes_m = list(m) if isinstance(m, (range, list)) else [m]
  squares = [(a, b) for a in sizes_n for b in sizes_m if a == b]
  kinds = ['horizontal', 'vertical', 'not_symmetric', 'mirror']
  if squares:
    kinds += ['diagonal', 'radial']
  kind = symmetry or random.choice(kinds)
  if kind in ('diagonal', 'radial'):
    rows, cols = random.choice(squares)
  else:
    rows, cols = random.choice(sizes_n), random.choice(sizes_m)
  fill = density
  if rows == 1 or cols == 1:
    fill = 1
  elif rows == 2 or cols == 2:
    fill = max(density, 0.6)
  elif rows == 3 or cols == 3:
    fill = max(density, 0.5)
  elif density != 1:
    fill = max(0.4, min(0.95, random.gauss(density, 0.1)))
  sprite = generate_sprite(
      rows,
      cols,
      symmetry_type=kind,
      color_palate=color_palette,
      fill_percentage=fill,
      connectivity=connectivity,
      background=background,
  )
  assert is_contiguous(
      sprite, connectivity=connectivity, background=background
  ), 'Generated sprite is not contiguous.'
  edges = (sprite[0, :], sprite[-1, :], sprite[:, 0], sprite[:, -1])
  if all(np.any(edge != background) for edge in edges):
    return sprite
  return random_sprite(n, m, density, symmetry, color_palette, connectivity, background)


# ------------------------------------------------------------ object search


def _allowed_colors(values, colors, background) -> bool:
  return all(c in colors or c == background for c in values.flatten())


def detect_objects(
    grid,
    _=None,
    predicate=None,
    background=Color.BLACK,
    monochromatic=False,
    connectivity=None,
    allowed_dimensions=None,
    colors=None,
    can_overlap=False,
):
  """Objects of `grid` (grid-sized arrays on `background`) meeting a specification.

  connectivity (4 or 8; None: no component search): connected components
    (`monochromatic` as find_connected_components), kept if all their colours are in
    `colors` (when given) and `predicate(crop(object))` holds (when given).
  allowed_dimensions: [(rows, cols), ...]: components are kept only if their array
    has one of these shapes, and every window of these sizes with a non-background
    pixel, allowed colours and `predicate(window)` is added as an object.
  can_overlap=False: the objects (largest bounding box first, then most pixels) are
    reduced to a non-overlapping set covering the most pixels.
  """
  objects = []
  if connectivity:
    objects = find_connected_components(
        grid, background=background, connectivity=connectivity, monochromatic=monochromatic
    )
    if colors:
      objects = [o for o in objects if _allowed_colors(o, colors, background)]
    if predicate:
      objects = [o for o in objects if predicate(crop(o, background=background))]
  if allowed_dimensions:
    objects = [o for o in objects if o.shape in allowed_dimensions]
    objects += _window_objects(grid, objects, allowed_dimensions, predicate, background, colors)
  if not can_overlap:
    objects = _non_overlapping(grid, objects, background)
  return objects


def _window_objects(grid, found, dimensions, predicate, background, colors):
  """detect_objects' scan: every allowed window as a grid-sized object, unless equal to
  one of the components already found."""
  scanned = []
  for h, w in dimensions:
    for i, j in itertools.product(range(grid.shape[0] - h + 1), range(grid.shape[1] - w + 1)):
      window = grid[i : i + h, j : j + w]
      if not np.any(window != background):
        continue
      if colors is not None and not _allowed_colors(window, colors, background):
        continue
      if predicate is not None and not predicate(window):
        continue
      candidate = np.full(grid.shape, background)
      candidate[i : i + h, j : j + w] = window
      if not any(np.all(candidate == o) for o in found):
        scanned.append(candidate)
  return scanned


def _non_overlapping(grid, objects, background):
  """Objects that overlap none are kept; among the rest, the subset without overlaps
  covering the most pixels (an exhaustive search, first found wins ties)."""

  def size(o):
    box = crop(o, background)
    return box.shape[0] * box.shape[1], np.sum(o != background)

  objects = sorted(objects, key=size, reverse=True)
  masks = [o != background for o in objects]
  count = len(objects)
  overlaps = np.zeros((count, count), dtype=bool)
  for i, j in itertools.combinations(range(count), 2):
    overlaps[i, j] = overlaps[j, i] = np.any(masks[i] & masks[j])
  keep = [o for i, o in enumerate(objects) if not overlaps[i].any()]
  rest = [i for i in range(count) if overlaps[i].any()]
  reachable = np.zeros_like(grid, dtype=bool)
  for i in rest:
    reachable |= masks[i]
  best_possible = np.sum(reachable)

  def pick(remaining, chosen, covered):
    if not remaining:
      return [objects[i] for i in chosen], np.sum(covered)
    first, *others = remaining
    if any(overlaps[i, first] for i in chosen):
      return pick(others, chosen, covered)
    with_it, with_score = pick(others, chosen + [first], covered | masks[first])
    if with_score == best_possible:
      return with_it, with_score
    without_it, without_score = pick(others, chosen, covered)
    return (with_it, with_score) if with_score > without_score else (without_it, without_score)

  chosen, _ = pick(rest, [], np.zeros_like(grid, dtype=bool))
  return keep + chosen


# ------------------------------------------------------------------ display


def show_colored_grid(grid, text=True):
  """Prints the grid, one line per column y, a digit per cell (BARC's layout)."""
  del text  # BARC's matplotlib view is not available in the sandbox
  for y in range(grid.shape[1]):
    print(''.join(str(grid[x, y]) for x in range(grid.shape[0])))


def visualize(
    input_generator: Callable[[], np.ndarray],
    transform: Callable[[np.ndarray], np.ndarray],
    n_examples: int = 5,
    n_attempts: int = 100,
):
  """Prints up to `n_examples` generated inputs with their transforms."""
  shown = 0
  for _ in range(n_attempts):
    if shown >= n_examples:
      break
    try:
      grid = input_generator()
      output = transform(grid.copy())
    except Exception as e:  # pylint: disable=broad-except (a demo helper: report and go on)
      print(f'failed: {type(e).__name__}: {e}')
      continue
    shown += 1
    print('Input:')
    show_colored_grid(grid)
    print('Output:')
    show_colored_grid(output)
