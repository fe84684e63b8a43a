"""recipe='marc' augmenters: each of the reference's 23 equals the reference on real ARC grids.

Golden: tests/data/goldens/marc_augmenters.json, made by running ekinakyurek/marc @95b3348
(numpy 2.4.6) outside this repository: for each augmenter of ttt/preprocess.py
get_augmenters(), in its order, `augmenter.apply_to_task(Task(train_examples=[pair],
test_example=pair), to_input=True, to_output=True, rng=np.random.RandomState(seed))` on
one demonstration pair of each listed ARC-AGI-1 evaluation task (arclib/augmenters.py
does the work; the one example gets a fresh copy of the generator as in
get_test_time_train_data). A grid past 30x30 is stored as its [rows, cols] only. The
random augmenter (RandomTranslateXY) is stored for seeds 0, 1, 2, the others for seed 0.
"""

import json
import pathlib

import numpy as np
import pytest

from ttt_jax.data import arc, augment
from ttt_jax.data.marc_augmenters import AUGMENTERS, augment_pairs, translate_shifts

GOLDEN = json.loads((pathlib.Path(__file__).parent / 'goldens/marc_augmenters.json').read_text())


def golden_pairs() -> list[arc.Pair]:
  ids = sorted({task_id for task_id, _ in GOLDEN['pairs']})
  tasks = {t.id: t for t in arc.load_tasks('arc1/eval@ids=' + ','.join(ids))[0]}
  return [tasks[task_id].train[i] for task_id, i in GOLDEN['pairs']]


def test_the_augmenters_are_the_references_in_its_order():
  golden_names = list(dict.fromkeys(key.split('@')[0] for key in GOLDEN['results']))
  assert [name for name, _ in AUGMENTERS] == golden_names and len(AUGMENTERS) == 23


@pytest.mark.parametrize('seed', (0, 1, 2))
def test_each_augmenter_on_real_grids_equals_the_reference(seed):
  grids, shapes, fits = augment_pairs(golden_pairs(), seed)
  checked = grown = 0
  for a, (name, _) in enumerate(AUGMENTERS):
    key = f'{name}@seed={seed}'
    if key not in GOLDEN['results']:  # deterministic: one golden for every seed
      key = f'{name}@seed=0'
    for n, expected_pair in enumerate(GOLDEN['results'][key]):
      too_large = [isinstance(g[0], int) for g in expected_pair]  # [rows, cols] past 30
      assert fits[a, n] == (not any(too_large)), (key, n)
      for side, expected in enumerate(expected_pair):
        if too_large[side]:
          assert max(expected) > augment.SIZE
          grown += 1
          continue
        got = augment.unpad_grid(grids[a, n, side], shapes[a, n, side])
        np.testing.assert_array_equal(got, np.array(expected), err_msg=f'{key} pair {n}')
        checked += 1
  assert checked > 100 and grown > 0  # the golden exercises both


def test_translate_shifts_are_the_references_draws_per_example():
  shapes = np.array([[2, 9], [5, 1], [2, 9], [5, 1]], np.int32)  # two identical examples
  shifts = translate_shifts(shapes, seed=5)
  rng = np.random.RandomState(5)
  expected = [[rng.randint(0, 2), rng.randint(0, 4)], [rng.randint(0, 4), rng.randint(0, 1)]]
  np.testing.assert_array_equal(shifts, expected * 2)
  assert (shifts < np.minimum(shapes, 4)).all()
