"""The pictures: each panel holds the grid it claims, curves hold the losses given,
bad input is refused with an error naming where it came from."""

import json

import matplotlib

matplotlib.use('Agg')

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import colors as mcolors

from ttt_jax import viz
from ttt_jax.data import augment
from ttt_jax.data.arc import Pair, Task
from ttt_jax.infer import prompts

GRID = np.array([[0, 1, 2], [3, 4, 5]])
SQUARE = np.array([[1, 2], [3, 4]])


def image(ax) -> np.ndarray:
  (im,) = ax.images
  return np.asarray(im.get_array())


def make_task(num_demos=3, test_output=SQUARE):
  demos = tuple(Pair(GRID + i, (GRID + i)[::-1]) for i in range(num_demos))
  return Task('t1', demos, (Pair(SQUARE, test_output),))


def test_plot_grid_shows_the_grid_in_the_arc_palette_with_cell_lines():
  fig = matplotlib.figure.Figure()
  ax = viz.plot_grid(fig.add_subplot(), GRID.tolist(), 'a title')
  np.testing.assert_array_equal(image(ax), GRID)
  assert ax.get_title() == 'a title'
  # One line per cell border: rows + 1 horizontal, cols + 1 vertical.
  assert len(ax.get_xticks(minor=True)) == 4 and len(ax.get_yticks(minor=True)) == 3
  assert len(ax.get_xticks()) == 0
  for c, hex_color in enumerate(viz.ARC_COLORS):
    assert viz.ARC_CMAP(viz.ARC_NORM(c)) == mcolors.to_rgba(hex_color)


@pytest.mark.parametrize(
    'grid, message',
    [
        ([[1, 2], [3]], 'not a rectangular grid'),
        (np.zeros((2, 2, 2), int), 'shape (2, 2, 2)'),
        (np.zeros((1, 31), int), 'shape (1, 31)'),
        ([[1, 10]], 'values 1..10'),
        (np.full((2, 2), augment.FILL), 'unpad'),
        ([[0.5, 1.0]], 'dtype float64'),
    ],
)
def test_bad_grids_are_refused_naming_where(grid, message):
  with pytest.raises(ValueError, match='my grid') as e:
    viz.as_grid(grid, 'my grid')
  assert message in str(e.value)


def test_plot_task_puts_inputs_above_outputs_and_hides_unknown_outputs():
  task = make_task(num_demos=3, test_output=None)
  fig = viz.plot_task(task, max_pairs=2)
  assert len(fig.axes) == 2 * 3  # 2 demonstrations + 1 test, input and output each
  axes = np.array(fig.axes).reshape(2, 3)
  for i in range(2):
    np.testing.assert_array_equal(image(axes[0, i]), task.train[i].input)
    np.testing.assert_array_equal(image(axes[1, i]), task.train[i].output)
  np.testing.assert_array_equal(image(axes[0, 2]), SQUARE)
  assert not axes[1, 2].images and axes[1, 2].texts[0].get_text() == '?'
  assert 'first 2 of 3' in fig.get_suptitle()

  shown = viz.plot_task(make_task(num_demos=1))
  np.testing.assert_array_equal(image(np.array(shown.axes).reshape(2, 2)[1, 1]), SQUARE)
  hidden = viz.plot_task(make_task(num_demos=1), show_test_output=False)
  assert not np.array(hidden.axes).reshape(2, 2)[1, 1].images


def test_plot_task_names_the_task_and_field_of_a_bad_grid():
  task = Task('bad1', (Pair(GRID, np.zeros((2, 2, 2), int)),), (Pair(GRID),))
  with pytest.raises(ValueError, match=r'task bad1 train\[0\]\.output'):
    viz.plot_task(task)
  with pytest.raises(ValueError, match='max_pairs'):
    viz.plot_task(make_task(), max_pairs=0)


def test_plot_augmentations_shows_each_transform_and_its_inverse_giving_x_back():
  perm = jnp.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 1], jnp.int32)
  transforms = [
      augment.Transform(jnp.int32(k), jnp.arange(10, dtype=jnp.int32)) for k in range(8)
  ] + [augment.Transform(jnp.int32(1), perm)]
  fig = viz.plot_augmentations(GRID, transforms)
  axes = np.array(fig.axes).reshape(len(transforms), 3)
  for row, t in enumerate(transforms):
    expected = prompts.transform_grid(GRID, int(t.d8), np.asarray(t.colors))
    np.testing.assert_array_equal(image(axes[row, 0]), GRID)
    np.testing.assert_array_equal(image(axes[row, 1]), expected)
    np.testing.assert_array_equal(image(axes[row, 2]), GRID)
    assert axes[row, 2].get_title().endswith(viz.RIGHT)
    assert augment.D8_NAMES[int(t.d8)] in axes[row, 0].get_ylabel()
  assert '2345678' in axes[-1, 0].get_ylabel()  # the permuted colours are named


def test_plot_augmentations_takes_a_pair_and_batched_transforms():
  pair = Pair(GRID, SQUARE)
  batched = augment.random_transforms(jax.random.key(0), 3)
  fig = viz.plot_augmentations(pair, batched)
  axes = np.array(fig.axes).reshape(3, 6)  # x, y | t(x), t(y) | inverses
  for row in range(3):
    d8, colors = int(batched.d8[row]), np.asarray(batched.colors[row])
    np.testing.assert_array_equal(image(axes[row, 3]), prompts.transform_grid(SQUARE, d8, colors))
    np.testing.assert_array_equal(image(axes[row, 5]), SQUARE)


def test_plot_augmentations_refuses_bad_transforms():
  bad_colors = augment.Transform(jnp.int32(0), jnp.zeros(10, jnp.int32))
  with pytest.raises(ValueError, match=r'transforms\[0\]\.colors must be a permutation'):
    viz.plot_augmentations(GRID, [bad_colors])
  with pytest.raises(ValueError, match=r'transforms\[0\]\.d8'):
    viz.plot_augmentations(GRID, [augment.Transform(jnp.int32(8), jnp.arange(10))])
  with pytest.raises(ValueError, match=r'transforms\[1\] is a int'):
    viz.plot_augmentations(GRID, [augment.identity_transform(), 3])
  with pytest.raises(ValueError, match='no output'):
    viz.plot_augmentations(Pair(GRID), [augment.identity_transform()])


def write_metrics(path, records):
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  return path


def test_plot_loss_curves_draws_each_jobs_losses_with_gaps_for_none(tmp_path):
  records = [
      {'task_id': 'a', 'lr': 1e-3, 'status': 'done', 'losses': [2.0, None, 1.5, 1.0]},
      {'task_id': 'b', 'lr': 1e-3, 'status': 'nan', 'losses': [3.0, 2.5]},
  ]
  fig = viz.plot_loss_curves(write_metrics(tmp_path / 'ttt_metrics.jsonl', records))
  (ax,) = fig.axes
  a, b = ax.lines
  np.testing.assert_array_equal(a.get_xdata(), [1, 2, 3, 4])
  np.testing.assert_array_equal(a.get_ydata(), [2.0, np.nan, 1.5, 1.0])
  np.testing.assert_array_equal(b.get_ydata(), [3.0, 2.5])
  assert [line.get_label() for line in ax.lines] == ['a', 'b (nan)']

  (only_b,) = viz.plot_loss_curves(records, task_ids=['b']).axes[0].lines
  np.testing.assert_array_equal(only_b.get_ydata(), [3.0, 2.5])


def test_plot_loss_curves_labels_an_lr_sweep():
  records = [{'task_id': 'a', 'lr': lr, 'status': 'done', 'losses': [1.0]} for lr in (1e-3, 1e-4)]
  labels = [line.get_label() for line in viz.plot_loss_curves(records).axes[0].lines]
  assert labels == ['a lr=0.001', 'a lr=0.0001']


def test_plot_loss_curves_labels_an_in_step_sweep_by_the_knobs_that_differ():
  knobs = dict(lr=1e-3, alpha=16.0, rank=8, weight_decay=0.01, warmup_frac=0.1, max_steps=None)
  records = [
      {'task_id': t, 'hyper': {**knobs, **change}, 'status': 'done', 'losses': [1.0]}
      for t, change in (('a', {}), ('a', {'rank': 16, 'max_steps': 4}), ('b', {}))
  ]
  labels = [line.get_label() for line in viz.plot_loss_curves(records).axes[0].lines]
  assert labels == ['a rank=8 max_steps=none', 'a rank=16 max_steps=4', 'b']


def test_plot_loss_curves_refuses_bad_metrics(tmp_path):
  with pytest.raises(ValueError, match=r'no TTT job for task ids \[\'zz\'\]'):
    viz.plot_loss_curves([{'task_id': 'a', 'losses': [1.0]}], task_ids=['zz'])
  with pytest.raises(ValueError, match='record 0: needs "task_id" and "losses"'):
    viz.plot_loss_curves([{'task_id': 'a'}])
  with pytest.raises(ValueError, match='no TTT jobs'):
    viz.plot_loss_curves([])
  broken = tmp_path / 'broken.jsonl'
  broken.write_text('{"task_id": "a", "losses": [1.0]}\n{"task_id": \n')
  with pytest.raises(ValueError, match=f'{broken}:2: not a JSON record'):
    viz.plot_loss_curves(broken)


def as_json(grid):
  return grid.tolist() if isinstance(grid, np.ndarray) else grid


def attempts_record(attempt_1, attempt_2, task_id='t1', votes=(4, 2)):
  """A record as ttt_jax.infer.predict.predict_task writes it to attempts.jsonl."""
  return {
      'task_id': task_id,
      'attempts': [{'attempt_1': as_json(attempt_1), 'attempt_2': as_json(attempt_2)}],
      'details': [
          {
              'votes': list(votes),
              'found_by': [['identity'], ['rot90']],
              'num_candidates': 6,
              'num_valid': 6,
          }
      ],
      'num_variants': 6,
  }


def test_plot_predictions_shows_attempts_beside_the_truth_with_tick_and_cross():
  task = make_task()
  wrong = SQUARE[::-1]
  fig = viz.plot_predictions(task, attempts_record(wrong, SQUARE))
  test_input, first, second, truth = fig.axes
  np.testing.assert_array_equal(image(test_input), SQUARE)
  np.testing.assert_array_equal(image(first), wrong)
  np.testing.assert_array_equal(image(second), SQUARE)
  np.testing.assert_array_equal(image(truth), SQUARE)
  assert first.get_title() == f'attempt 1 {viz.WRONG} (4 votes)'
  assert second.get_title() == f'attempt 2 {viz.RIGHT} (2 votes)'
  assert '1 / 1 test outputs right' in fig.get_suptitle()

  missed = viz.plot_predictions(task, attempts_record(wrong, wrong))
  assert '0 / 1 test outputs right' in missed.get_suptitle()


def test_plot_predictions_without_truth_or_details():
  task = make_task(test_output=None)
  record = attempts_record(SQUARE, SQUARE)
  del record['details']
  _, first, _, truth = viz.plot_predictions(task, record).axes
  assert first.get_title() == 'attempt 1'
  assert not truth.images and truth.texts[0].get_text() == 'unknown'


def test_plot_predictions_refuses_a_record_that_does_not_fit_the_task():
  task = make_task()
  with pytest.raises(ValueError, match="of task 'other', not 't1'"):
    viz.plot_predictions(task, attempts_record(SQUARE, SQUARE, task_id='other'))
  two = attempts_record(SQUARE, SQUARE)
  two['attempts'] *= 2
  with pytest.raises(ValueError, match=r'one entry per test input \(1\)'):
    viz.plot_predictions(task, two)
  with pytest.raises(ValueError, match=r'task t1 attempts\[0\]\.attempt_2: not a rectangular'):
    viz.plot_predictions(task, attempts_record(SQUARE, [[1, 2], [3]]))
  no_second = attempts_record(SQUARE, SQUARE)
  del no_second['attempts'][0]['attempt_2']
  with pytest.raises(ValueError, match=r'attempts\[0\] needs "attempt_1" and "attempt_2"'):
    viz.plot_predictions(task, no_second)
