"""Decode batches: sorted by prompt length, and with adapters never mixing tasks (each
call then runs one shared adapter)."""

import types

from ttt_jax.infer import candidates


def _setup():
  # 5 rows of variants with prompt lengths 9, 3, 7, 5, 1; tasks 0, 1, 0, 1, 0.
  variants = [types.SimpleNamespace(tokens=[0] * n) for n in (9, 3, 7, 5, 1)]
  rows = [types.SimpleNamespace(variant=i) for i in range(5)]
  return rows, variants, [0, 1, 0, 1, 0]


def test_batches_by_task_never_mix_tasks():
  rows, variants, task_index = _setup()
  batches = candidates._batches(rows, variants, task_index, True, batch_size=2)
  assert batches == [[4, 2], [0], [1, 3]]
  for batch in batches:
    assert len({task_index[r] for r in batch}) == 1


def test_batches_without_adapters_sort_all_rows_by_length():
  rows, variants, task_index = _setup()
  assert candidates._batches(rows, variants, task_index, False, batch_size=2) == [
      [4, 1],
      [3, 2],
      [0],
  ]
