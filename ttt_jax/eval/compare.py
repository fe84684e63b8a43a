"""Paired comparisons of prediction arms over the same tasks: pass@2 per group, sign tests.

An arm is one prediction run's Score (e.g. no TTT / TTT, constrained / free
decoding). Groups are the kinds of task: a generated task's family (the family
held out of training whole is marked), or 'ARC', and ARC tasks by level where
they have one. Each cell scores both ways: pass@2 by test input, and (in
parentheses) the tasks with every test input right. The sign test is exact
and two-sided over the tasks where the two arms differ (by test input).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

from ttt_jax.data import generators
from ttt_jax.eval import metrics


def group_of(task_id: str) -> str:
  """'<family>' of a generated task ('<family> (held-out family)' for the one never
  trained on), else 'ARC'."""
  if not generators.is_generated(task_id):
    return 'ARC'
  family, _ = generators.family_of(task_id)
  return f'{family} (held-out family)' if family == generators.HELD_OUT_FAMILY else family


def sign_test(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
  """(tasks where b scores higher, where a does, two-sided exact p) of paired scores."""
  if len(a) != len(b):
    raise ValueError(f'paired scores differ in length: {len(a)} vs {len(b)}')
  wins = sum(y > x for x, y in zip(a, b))
  losses = sum(x > y for x, y in zip(a, b))
  n, k = wins + losses, min(wins, losses)
  p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
  return wins, losses, p


LEGEND = (
    'Each cell: pass@2 summed by test input (each its fraction of a task), and in '
    'parentheses the tasks with every test input right.'
)


def _per_task(score: metrics.Score) -> dict[str, metrics.TaskResult]:
  return {t.task_id: t for t in score.tasks}


def group_table(arms: Mapping[str, metrics.Score]) -> str:
  """Markdown: pass@2 of every arm per group of tasks (and per level), then over all
  tasks; the legend below it."""
  per_task = {name: _per_task(score) for name, score in arms.items()}
  first = next(iter(per_task.values()))
  ids = sorted(first)
  for name, results in per_task.items():
    if sorted(results) != ids:
      raise ValueError(f'arm {name!r} scores other tasks than the first arm')
  groups: dict[str, list[str]] = {}
  for task_id in ids:
    groups.setdefault(group_of(task_id), []).append(task_id)
  lines = ['| tasks | n | ' + ' | '.join(arms) + ' |', '|---|---|' + '---|' * len(arms)]
  for group, members in sorted(groups.items(), key=lambda kv: (kv[0] == 'ARC', kv[0])):
    lines.append(_row(group, members, per_task))
  for level, score in metrics.Score(tuple(first[i] for i in ids)).by_level.items():
    lines.append(_row(f'level {level}', [t.task_id for t in score.tasks], per_task))
  if len(lines) > 3:
    lines.append(_row('**all**', ids, per_task))
  return '\n'.join([*lines, '', LEGEND])


def _row(
    label: str, ids: Sequence[str], per_task: Mapping[str, Mapping[str, metrics.TaskResult]]
) -> str:
  cells = [
      f'{math.fsum(results[i].score for i in ids):.2f} ({sum(results[i].solved for i in ids)})'
      for results in per_task.values()
  ]
  return f'| {label} | {len(ids)} | ' + ' | '.join(cells) + ' |'


def sign_test_lines(
    arms: Mapping[str, metrics.Score], pairs: Sequence[tuple[str, str]]
) -> list[str]:
  """One Markdown bullet per (a, b) pair of arm names: b better / worse on how many tasks."""
  per_task = {name: _per_task(score) for name, score in arms.items()}
  lines = []
  for a, b in pairs:
    ids = sorted(per_task[a])
    wins, losses, p = sign_test(
        [per_task[a][i].score for i in ids], [per_task[b][i].score for i in ids]
    )
    lines.append(
        f'- {b} vs {a}: higher on {wins} tasks, lower on {losses}, '
        f'equal on {len(ids) - wins - losses}; sign test p = {p:.3g}'
    )
  return lines


ARM_DIRS = {  # a demo workdir's prediction folders (ttt_jax/demo.py)
    'no TTT': 'predict_base',
    'TTT': 'predict_ttt',
    'no TTT, free': 'predict_base_free',
    'TTT, free': 'predict_ttt_free',
}
PAIRS = (('no TTT', 'TTT'), ('no TTT, free', 'TTT, free'), ('TTT, free', 'TTT'))
PAIRS += (('no TTT, free', 'no TTT'),)


def compare_workdir(workdir: str, solutions: Mapping[str, Sequence[metrics.Grid]]) -> str:
  """The group table and sign tests of every arm a demo workdir has (Markdown)."""
  arms = {}
  for name, folder in ARM_DIRS.items():
    path = os.path.join(workdir, folder, 'submission.json')
    if os.path.exists(path):
      with open(path) as f:
        arms[name] = metrics.score_submission(json.load(f), solutions, metrics.known_levels())
  if not arms:
    raise ValueError(f'{workdir}: no predict_*/submission.json of a demo run')
  pairs = [(a, b) for a, b in PAIRS if a in arms and b in arms]
  return '\n'.join([group_table(arms), '', *sign_test_lines(arms, pairs)])
