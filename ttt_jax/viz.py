"""Pictures of the method: ARC grids, augmentations, TTT loss curves, predictions.

Every function builds a `matplotlib.figure.Figure` directly, without pyplot:
nothing is shown or kept in global state, any backend works (Agg in tests and
CI), and in a notebook the returned figure displays itself. Grids are numpy
arrays or nested lists [rows, cols] of colours 0..9, as tasks
(ttt_jax/data/arc.py), submissions and attempts.jsonl hold them; anything
else is a ValueError naming where it came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ttt_jax.data import augment
from ttt_jax.data.arc import MAX_SIDE, NUM_COLORS, Pair, Task
from ttt_jax.train import hyper

# The standard ARC palette: black, blue, red, green, yellow, grey, magenta,
# orange, azure, maroon.
ARC_COLORS = (
    '#000000',
    '#0074D9',
    '#FF4136',
    '#2ECC40',
    '#FFDC00',
    '#AAAAAA',
    '#F012BE',
    '#FF851B',
    '#7FDBFF',
    '#870C25',
)
ARC_CMAP = mcolors.ListedColormap(ARC_COLORS, name='arc')
# One bin per colour, so colour c is ARC_COLORS[c] whatever colours a grid holds.
ARC_NORM = mcolors.BoundaryNorm(np.arange(-0.5, NUM_COLORS), NUM_COLORS)
CELL_LINE_COLOR = '#555555'
PANEL_INCHES = 1.8  # side of one grid's panel
RIGHT, WRONG = '\u2713', '\u2717'  # tick and cross (DejaVu Sans, matplotlib's default font)


# --------------------------------------------------------------------- grids


def as_grid(grid: Any, where: str = 'grid') -> np.ndarray:
  """`grid` as int32 [rows, cols] of colours 0..9, or a ValueError naming `where`."""
  try:
    array = np.asarray(grid)
  except ValueError as e:  # ragged nested lists
    raise ValueError(f'{where}: not a rectangular grid ({e})') from None
  if array.ndim != 2 or not (1 <= array.shape[0] <= MAX_SIDE and 1 <= array.shape[1] <= MAX_SIDE):
    raise ValueError(
        f'{where}: expected a 2-D grid with sides 1..{MAX_SIDE}, ' f'got shape {array.shape}'
    )
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f'{where}: cells must be ints in 0..9, got dtype {array.dtype}')
  if array.min() < 0 or array.max() >= NUM_COLORS:
    raise ValueError(
        f'{where}: cells must be ints in 0..9, got values {array.min()}..'
        f'{array.max()} (a FILL-padded grid? unpad it with augment.unpad_grid)'
    )
  return array.astype(np.int32)


def same_grid(a: Any, b: Any) -> bool:
  """Whether two valid grids are equal (shape and every cell)."""
  a, b = as_grid(a, 'first grid'), as_grid(b, 'second grid')
  return a.shape == b.shape and bool((a == b).all())


def plot_grid(ax: Axes, grid: Any, title: str | None = None, *, where: str = 'grid') -> Axes:
  """Draws one grid on `ax` in the ARC palette, with lines between cells."""
  grid = as_grid(grid, where)
  ax.imshow(grid, cmap=ARC_CMAP, norm=ARC_NORM, interpolation='nearest')
  rows, cols = grid.shape
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xticks(np.arange(-0.5, cols), minor=True)
  ax.set_yticks(np.arange(-0.5, rows), minor=True)
  ax.tick_params(which='minor', length=0)
  ax.grid(which='minor', color=CELL_LINE_COLOR, linewidth=0.5)
  if title is not None:
    ax.set_title(title, fontsize=9)
  return ax


def _blank(ax: Axes, text: str, title: str | None = None) -> None:
  """An axis holding only a word (an unknown output, a hidden answer)."""
  ax.set_axis_off()
  ax.text(0.5, 0.5, text, ha='center', va='center', transform=ax.transAxes, fontsize=14)
  if title is not None:
    ax.set_title(title, fontsize=9)


def _panels(rows: int, cols: int) -> tuple[Figure, np.ndarray]:
  fig = Figure(figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES + 0.4), layout='constrained')
  return fig, fig.subplots(rows, cols, squeeze=False)


# --------------------------------------------------------------------- tasks


def plot_task(task: Task, max_pairs: int = 4, show_test_output: bool = True) -> Figure:
  """The first `max_pairs` demonstrations and every test pair: inputs above outputs.

  A test output that is unknown (or hidden with show_test_output=False) is a '?'.
  """
  if max_pairs < 1:
    raise ValueError(f'plot_task: max_pairs must be >= 1, got {max_pairs}')
  columns = [(f'train[{i}]', p, True) for i, p in enumerate(task.train[:max_pairs])] + [
      (f'test[{i}]', p, show_test_output) for i, p in enumerate(task.test)
  ]
  fig, axes = _panels(2, len(columns))
  for col, (name, pair, show_output) in enumerate(columns):
    where = f'task {task.id} {name}'
    plot_grid(axes[0, col], pair.input, f'{name} input', where=f'{where}.input')
    if pair.output is None or not show_output:
      _blank(axes[1, col], '?', f'{name} output')
    else:
      plot_grid(axes[1, col], pair.output, f'{name} output', where=f'{where}.output')
  shown = min(max_pairs, len(task.train))
  more = f' (first {shown} of {len(task.train)} demonstrations)' if shown < len(task.train) else ''
  fig.suptitle(f'task {task.id}{more}')
  return fig


# ------------------------------------------------------------- augmentations


def transform_name(t: augment.Transform) -> str:
  """'rot90', or 'rot90 + colours 0312...' when the colours are permuted."""
  colors = np.asarray(t.colors)
  name = augment.D8_NAMES[int(t.d8)]
  if (colors == np.arange(NUM_COLORS)).all():
    return name
  return f'{name} + colours {"".join(str(int(c)) for c in colors)}'


def _unstack(
    transforms: augment.Transform | Sequence[augment.Transform],
) -> list[augment.Transform]:
  """Single transforms from one, a batched one (d8 [n], colors [n, 10]) or a sequence."""
  if isinstance(transforms, augment.Transform):
    d8, colors = np.asarray(transforms.d8), np.asarray(transforms.colors)
    if d8.ndim == 0:
      transforms = [transforms]
    else:
      transforms = [augment.Transform(d8[i], colors[i]) for i in range(d8.shape[0])]
  singles = []
  for i, t in enumerate(transforms):
    if not isinstance(t, augment.Transform):
      raise ValueError(f'transforms[{i}] is a {type(t).__name__}, expected augment.Transform')
    d8, colors = np.asarray(t.d8), np.asarray(t.colors)
    if d8.shape != () or not 0 <= int(d8) < 8:
      raise ValueError(f'transforms[{i}].d8 must be one int in 0..7, got {d8.tolist()}')
    if sorted(colors.tolist()) != list(range(NUM_COLORS)):
      raise ValueError(
          f'transforms[{i}].colors must be a permutation of 0..9, ' f'got {colors.tolist()}'
      )
    singles.append(augment.Transform(jnp.int32(d8), jnp.asarray(colors, jnp.int32)))
  if not singles:
    raise ValueError('transforms is empty: nothing to show')
  return singles


def apply_to_grid(grid: Any, t: augment.Transform, *, where: str = 'grid') -> np.ndarray:
  """augment.apply_transform (the array op training and voting use) on an unpadded grid."""
  padded, shape = augment.pad_grid(as_grid(grid, where))
  out, new_shape = augment.apply_transform(jnp.asarray(padded), jnp.asarray(shape), t)
  return augment.unpad_grid(np.asarray(out), np.asarray(new_shape))


def plot_augmentations(
    item: Any, transforms: augment.Transform | Sequence[augment.Transform]
) -> Figure:
  """One row per transform t (named on the left): x, t(x), t^-1(t(x)), for a grid x or
  both grids of a Pair.

  The inverse's title says whether it gave x back exactly (it always should:
  that is what lets inference map every augmented prediction back before voting).
  """
  if isinstance(item, Pair):
    if item.output is None:
      raise ValueError('plot_augmentations: the pair has no output; pass its input grid')
    grids = [('x', as_grid(item.input, 'pair.input')), ('y', as_grid(item.output, 'pair.output'))]
  else:
    grids = [('x', as_grid(item, 'grid'))]
  singles = _unstack(transforms)
  fig, axes = _panels(len(singles), 3 * len(grids))
  for row, t in enumerate(singles):
    inverse = augment.invert_transform(t)
    for g, (name, grid) in enumerate(grids):
      moved = apply_to_grid(grid, t)
      back = apply_to_grid(moved, inverse)
      ok = RIGHT if same_grid(back, grid) else f'{WRONG} differs'
      plot_grid(axes[row, g], grid, name)
      plot_grid(axes[row, len(grids) + g], moved, f't({name})')
      plot_grid(axes[row, 2 * len(grids) + g], back, f't\u207b\u00b9(t({name})) {ok}')
    axes[row, 0].set_ylabel(f't = {transform_name(t)}'.replace(' + ', '\n'), fontsize=8)
  fig.suptitle('invertible augmentations and their inverses')
  return fig


# ---------------------------------------------------------------- TTT losses


def read_ttt_metrics(path: str | os.PathLike) -> list[dict]:
  """The records of a TTT run's ttt_metrics.jsonl (one per job; ttt_jax/train/ttt.py)."""
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number}: not a JSON record ({e})') from None
  return records


def _knobs(record: Mapping) -> dict:
  """A job's sweep knobs (train/hyper.py); a line from before them has its lr alone."""
  return record.get('hyper') or {'lr': record.get('lr')}


def _check_metrics(records: Sequence[Mapping], source: str) -> None:
  if not records:
    raise ValueError(f'{source}: no TTT jobs to plot')
  for i, r in enumerate(records):
    if not isinstance(r, Mapping) or 'task_id' not in r or 'losses' not in r:
      raise ValueError(f'{source} record {i}: needs "task_id" and "losses", got {r!r:.200}')
    if not isinstance(r['losses'], (list, tuple)):
      raise ValueError(
          f'{source} record {i} (task {r["task_id"]}): "losses" must be a list, '
          f'got {type(r["losses"]).__name__}'
      )


def plot_loss_curves(
    metrics: str | os.PathLike | Iterable[Mapping], task_ids: Sequence[str] | None = None
) -> Figure:
  """Per-job TTT loss vs step, from ttt_metrics.jsonl (a path) or its records.

  A None loss (a non-finite step) is a gap in the curve. With several jobs per task (an
  in-step sweep) each line says the knobs that differ between them (lr=0.001 rank=8).
  """
  if isinstance(metrics, (str, os.PathLike)):
    source, records = str(metrics), read_ttt_metrics(metrics)
  else:
    source, records = 'metrics', list(metrics)
  _check_metrics(records, source)
  if task_ids is not None:
    unknown = [t for t in task_ids if t not in {r['task_id'] for r in records}]
    if unknown:
      raise ValueError(f'{source}: no TTT job for task ids {unknown}')
    records = [r for r in records if r['task_id'] in set(task_ids)]
  knobs_of = {}
  for r in records:
    knobs_of.setdefault(r['task_id'], []).append(_knobs(r))
  fig = Figure(figsize=(6.5, 3.8), layout='constrained')
  ax = fig.add_subplot()
  for r in records:
    losses = np.array([np.nan if loss is None else loss for loss in r['losses']], np.float64)
    knobs, label = _knobs(r), r['task_id']
    for name, value in knobs.items():
      if any(other.get(name) != value for other in knobs_of[r['task_id']]):
        label += f' {name}={hyper.value_str(value)}'
    if r.get('status', 'done') != 'done':
      label += f' ({r["status"]})'
    ax.plot(np.arange(1, len(losses) + 1), losses, marker='.', label=label)
  ax.set_xlabel('TTT step')
  ax.set_ylabel('loss (mean target cross-entropy)')
  ax.set_title('test-time training, one adapter per task')
  ax.legend(fontsize=8)
  return fig


# --------------------------------------------------------------- predictions


def _check_record(task: Task, record: Mapping) -> None:
  """attempts.jsonl's record of `task` (ttt_jax/infer/predict.py), or a ValueError."""
  if not isinstance(record, Mapping) or 'attempts' not in record:
    raise ValueError(f'task {task.id}: the attempts record needs an "attempts" field')
  if record.get('task_id', task.id) != task.id:
    raise ValueError(f'the attempts record is of task {record["task_id"]!r}, not {task.id!r}')
  attempts, details = record['attempts'], record.get('details')
  if not isinstance(attempts, list) or len(attempts) != len(task.test):
    raise ValueError(
        f'task {task.id}: "attempts" must hold one entry per test input '
        f'({len(task.test)}), got {attempts!r:.200}'
    )
  for n, entry in enumerate(attempts):
    if not isinstance(entry, Mapping) or not {'attempt_1', 'attempt_2'} <= set(entry):
      raise ValueError(f'task {task.id}: attempts[{n}] needs "attempt_1" and "attempt_2"')
  if details is not None and (not isinstance(details, list) or len(details) != len(task.test)):
    raise ValueError(
        f'task {task.id}: "details" must hold one entry per test input '
        f'({len(task.test)}), got {details!r:.200}'
    )


def plot_predictions(task: Task, record: Mapping) -> Figure:
  """Per test input: the input, attempt 1, attempt 2 and the truth side by side.

  `record` is the task's line of attempts.jsonl: {'task_id', 'attempts':
  [{'attempt_1': grid, 'attempt_2': grid}, ...], 'details': [{'votes': [v1, v2],
  ...}, ...]} (details optional). An attempt's title has a tick or a cross
  when the truth is known, and its votes: 0 votes means no answer behind it
  (a repeat of attempt 1, or the placeholder [[0]] when no candidate was a
  valid grid).
  """
  _check_record(task, record)
  details = record.get('details')
  fig, axes = _panels(len(task.test), 4)
  right = 0
  for n, (pair, entry) in enumerate(zip(task.test, record['attempts'])):
    where = f'task {task.id} attempts[{n}]'
    votes = (details[n] or {}).get('votes') if details else None
    plot_grid(axes[n, 0], pair.input, f'test[{n}] input', where=f'task {task.id} test[{n}].input')
    solved = False
    for k in (1, 2):
      attempt = as_grid(entry[f'attempt_{k}'], f'{where}.attempt_{k}')
      title = f'attempt {k}'
      if pair.output is not None:
        correct = same_grid(attempt, pair.output)
        solved |= correct
        title += f' {RIGHT if correct else WRONG}'
      if votes is not None:
        title += f' ({votes[k - 1]} votes)'
      plot_grid(axes[n, k], attempt, title)
    if pair.output is None:
      _blank(axes[n, 3], 'unknown', 'truth')
    else:
      plot_grid(axes[n, 3], pair.output, 'truth', where=f'task {task.id} test[{n}].output')
      right += solved
  known = sum(p.output is not None for p in task.test)
  summary = f': {right} / {known} test outputs right (pass@2)' if known else ''
  fig.suptitle(f'task {task.id}{summary}')
  return fig
