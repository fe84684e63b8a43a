"""Shared TTT (the paper's "Shared TTT" arm): ONE adapter trained on the pooled TTT data
of every selected task, saved once and used by predict for every task.

Each task's examples are built as for its own adapter (same seed, same recipe); the pool
is their union, in task order (the epoch shuffle mixes them). The one job trains for a
step budget (`RunConfig.shared_steps`):
  'summed'   the sum of the per-task budgets (epochs x ceil(rows / batch) of each task
             with examples, each capped by max_steps): the compute of per-task TTT;
  'one_task' the largest per-task budget: the compute of one task's adapter.
It runs `epochs` enough passes over the pool to reach the budget, and stops there
(`shared_recipe`), under the cosine schedule of that budget.

On disk: the adapter in adapters/_shared/ (adapters/_shared/<name>/ in an in-step sweep,
e.g. lr_5e-05; a sweep of step caps is refused: the budget sets the steps) and
the manifest adapters/shared.json naming it, the tasks it was trained on and its budget.
`predict.load_adapters` finds the manifest and hands that adapter to every task.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

from ttt_jax import atomic_io, checked_read
from ttt_jax.train.ttt_config import TTTConfig, total_steps

SHARED_ID = '_shared'  # the adapter's directory under adapters/ (no ARC id starts with _)
MANIFEST = 'shared.json'
BUDGETS = ('summed', 'one_task')


def step_budget(rows_per_task: Sequence[int], ttt_config: TTTConfig, budget: str) -> int:
  """The shared job's optimizer steps from each task's rows (tasks without any are not
  trained per task either, so they add nothing)."""
  if budget not in BUDGETS:
    raise ValueError(f'shared_steps={budget!r}; expected one of {BUDGETS}')
  per_task = [int(total_steps(n, ttt_config)) for n in rows_per_task if n > 0]
  if not per_task:
    return 0
  return sum(per_task) if budget == 'summed' else max(per_task)


def shared_recipe(ttt_config: TTTConfig, pooled_rows: int, steps: int) -> TTTConfig:
  """The per-task recipe with epochs and max_steps set so that a job over `pooled_rows`
  rows takes exactly `steps` steps (`ttt_config.total_steps` of it is `steps`)."""
  per_epoch = max(math.ceil(pooled_rows / ttt_config.batch_size), 1)
  epochs = max(math.ceil(steps / per_epoch), 1)
  return dataclasses.replace(ttt_config, epochs=epochs, max_steps=max(steps, 1))


def write_manifest(adapters_dir: str, task_ids: Sequence[str], budget: str, steps: int) -> None:
  os.makedirs(adapters_dir, exist_ok=True)
  manifest = {'adapter': SHARED_ID, 'tasks': list(task_ids), 'budget': budget, 'steps': steps}
  atomic_io.write_json(os.path.join(adapters_dir, MANIFEST), manifest, indent=1)


def read_manifest(adapters_dir: str) -> dict | None:
  """The manifest of a shared run's adapters dir, None for per-task adapters."""
  path = os.path.join(adapters_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  return checked_read.read_json_object(path)
