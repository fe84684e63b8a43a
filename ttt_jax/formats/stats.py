"""How long tasks are in a token format: what each format costs per task."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ttt_jax.data import ttt_data
from ttt_jax.data.arc import Task
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT


def token_length_stats(
    tasks: Sequence[Task], budgets: Sequence[int] = (1024, 2048, 4096, 8192), fmt: Format = COMPACT
) -> dict:
  """How long tasks and single pairs are in `fmt`, in tokens; how many fit each budget.

  A task's length is its longest full sequence (all demonstrations plus one
  test pair with its output), so "fits" means every test input fits.
  """
  task_lengths = np.array(
      [
          max(fmt.task_tokens(t.train, p) for p in t.test if p.output is not None)
          for t in tasks
          if any(p.output is not None for p in t.test)
      ]
  )
  pair_lengths = np.array(
      [
          fmt.pair_tokens(p.input, p.output)
          for t in tasks
          for p in (*t.train, *t.test)
          if p.output is not None
      ]
  )

  def summary(lengths: np.ndarray) -> dict:
    if lengths.size == 0:
      return {'count': 0}
    return {
        'count': int(lengths.size),
        'median': float(np.median(lengths)),
        'max': int(lengths.max()),
        'fits': {b: int((lengths <= b).sum()) for b in budgets},
    }

  return {'tasks': summary(task_lengths), 'pairs': summary(pair_lengths)}


def ttt_token_stats(
    tasks: Sequence[Task], config: ttt_data.TTTDataConfig, fmt: Format = COMPACT
) -> dict:
  """What a task's TTT data costs in `fmt`: examples, tokens and target tokens per task
  (medians and totals), with each task seeded as run_ttt seeds it."""
  from ttt_jax.train.ttt import task_seed  # pylint: disable=import-outside-toplevel

  examples, tokens, targets = [], [], []
  for task in tasks:
    built, _ = ttt_data.build_ttt_examples(task, config, task_seed(task.id), fmt)
    examples.append(len(built))
    tokens.append(sum(len(t) for t, _ in built))
    targets.append(sum(int(m[1:].sum()) for _, m in built))
  per_task = lambda xs: {'median': float(np.median(xs)), 'total': int(np.sum(xs))}
  return {
      'tasks': len(tasks),
      'examples': per_task(examples),
      'tokens': per_task(tokens),
      'targets': per_task(targets),
  }
