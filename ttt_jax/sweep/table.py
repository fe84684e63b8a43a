"""A sweep's table: every finished arm's scores side by side, sign tests against the baseline.

Read from the arms' own files (nothing is kept in memory between arms), so the
table can be written after each arm finishes and again by `--report`:
WORKDIR/table.md, table.json and table.png (pass@2 per arm as bars, the counts
on them). An arm's headline prediction is its predict_ttt/ run when it has one,
else predict_base/.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

from ttt_jax import atomic_io, checkpoint
from ttt_jax.eval import compare, metrics
from ttt_jax.sweep import arm as arm_lib
from ttt_jax.sweep import spec


def _score(predict_dir: str, solutions, levels) -> metrics.Score:
  with open(os.path.join(predict_dir, 'submission.json')) as f:
    return metrics.score_submission(json.load(f), solutions, levels)


def _mean(values: Sequence[float]) -> float | None:
  return math.fsum(values) / len(values) if values else None


def _ttt_totals(directory: str) -> dict[str, Any]:
  """Steps and wall seconds of the arm's TTT jobs (ttt/ttt_metrics.jsonl), if it trained."""
  jobs = checkpoint.read_log(os.path.join(directory, 'ttt', 'ttt_metrics.jsonl'))
  if not jobs:
    return {'ttt_steps': None, 'ttt_tokens': None}
  tokens = [j.get('tokens') for j in jobs]
  return {
      'ttt_steps': sum(j['steps'] for j in jobs),
      'ttt_tokens': None if None in tokens else sum(tokens),
  }


@functools.lru_cache(maxsize=None)
def _solutions(selector: str) -> Mapping[str, list]:
  return metrics.load_solutions(selector)


def arm_row(
    workdir: str, arm: spec.Arm, levels: Mapping[str, str], readouts: Sequence[str] = ()
) -> dict[str, Any] | None:
  """One finished arm's numbers (scored against its own selector's solutions), or None
  if it has not finished."""
  result = arm_lib.result_of(workdir, arm)
  directory = arm_lib.arm_dir(workdir, arm)
  headline = os.path.join(directory, arm_lib.headline_stage(arm))
  if result is None:
    return None
  config = arm_lib.read_json(os.path.join(directory, arm_lib.CONFIG_FILE))
  solutions = _solutions(config['predict']['selector'])
  score = _score(headline, solutions, levels)
  with open(os.path.join(headline, 'details.json')) as f:
    details = json.load(f)
  nlls = [n for t in score.tasks if (n := metrics.truth_nll(t.task_id, details)) is not None]
  row = {
      'arm': arm.name,
      'prediction': os.path.basename(headline),
      'num_tasks': score.num_tasks,
      'pass2': score.total,  # fractional credit per test input
      'solved': score.num_solved,  # all-or-nothing per task
      'per_task': {t.task_id: t.score for t in score.tasks},
      'by_group': _by_group(score, levels),
      'truth_nll': _mean(nlls),
      'wall_s': sum(r['wall_s'] for r in result['timings']),
      **_ttt_totals(directory),
  }
  base = os.path.join(directory, 'predict_base')
  if base != headline and os.path.exists(os.path.join(base, 'submission.json')):
    row['pass2_no_ttt'] = _score(base, solutions, levels).total
  row['readouts'] = {}
  for readout in readouts:
    path = arm_lib.readout_dir(directory, readout)
    if os.path.exists(os.path.join(path, 'submission.json')):
      row['readouts'][readout] = _score(path, solutions, levels).total
  row['oracle'] = row['readouts'].get('oracle')
  return row


def _by_group(score: metrics.Score, levels: Mapping[str, str]) -> dict[str, float]:
  """pass@2 per generated family or ARC level ('ARC' when a task has no level)."""
  groups: dict[str, float] = {}
  for t in score.tasks:
    group = compare.group_of(t.task_id)
    if group == 'ARC' and t.task_id in levels:
      group = f'ARC {levels[t.task_id]}'
    groups[group] = groups.get(group, 0.0) + t.score
  return groups


def with_sign_tests(rows: Mapping[str, dict], baseline: str = spec.BASELINE) -> None:
  """Adds to each row its paired exact sign test against the baseline on their common tasks."""
  base = rows.get(baseline)
  for name, row in rows.items():
    if base is None or name == baseline:
      continue
    common = sorted(set(base['per_task']) & set(row['per_task']))
    wins, losses, p = compare.sign_test(
        [base['per_task'][t] for t in common], [row['per_task'][t] for t in common]
    )
    row['vs_baseline'] = {'tasks': len(common), 'higher': wins, 'lower': losses, 'p': p}


def _cell(value, fmt: str = '{:.2f}') -> str:
  return '-' if value is None else fmt.format(value)


def markdown(rows: Mapping[str, dict], pending: Sequence[str]) -> str:
  lines = [
      '| arm | tasks | pass@2 | solved | no TTT | oracle | true-output NLL | TTT steps '
      '| TTT tokens | wall min | vs baseline |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, r in rows.items():
    sign = r.get('vs_baseline')
    versus = '' if sign is None else f"+{sign['higher']} / -{sign['lower']}, p = {sign['p']:.3g}"
    lines.append(
        f"| {name} | {r['num_tasks']} | {r['pass2']:.2f} | {r['solved']} "
        f"| {_cell(r.get('pass2_no_ttt'))} | {_cell(r.get('oracle'))} "
        f"| {_cell(r['truth_nll'], '{:.3f}')} "
        f"| {_cell(r['ttt_steps'], '{}')} | {_cell(r['ttt_tokens'], '{}')} "
        f"| {r['wall_s'] / 60:.1f} | {versus} |"
    )
  readouts = sorted({name for r in rows.values() for name in r['readouts']} - {'oracle'})
  if readouts:
    lines += ['', '| readout (pass@2) | ' + ' | '.join(rows) + ' |', '|---|' + '---|' * len(rows)]
    for name in readouts:
      cells = ' | '.join(_cell(r['readouts'].get(name)) for r in rows.values())
      lines.append(f'| {name} | {cells} |')
  groups = sorted({g for r in rows.values() for g in r['by_group']})
  if len(groups) > 1:
    lines += ['', '| pass@2 by group | ' + ' | '.join(rows) + ' |', '|---|' + '---|' * len(rows)]
    for g in groups:
      lines.append(
          f'| {g} | ' + ' | '.join(_cell(r['by_group'].get(g)) for r in rows.values()) + ' |'
      )
  if pending:
    lines += ['', f'No result yet (not run, or not finished): {", ".join(pending)}.']
  lines += [
      '',
      'pass@2: fractional credit per test input, summed over tasks; solved: tasks with '
      'every test input right; oracle: pass@2 if any candidate that was voted on counted; '
      'vs baseline: tasks scoring higher / lower than the baseline arm, two-sided exact '
      'sign test; readouts: the same candidates voted another way (docs/SWEEPS.md).',
  ]
  return '\n'.join(lines) + '\n'


def bar_chart(rows: Mapping[str, dict], path: str) -> None:
  names = list(rows)
  values = [rows[n]['pass2'] for n in names]
  fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.2))
  bars = ax.bar(
      names, values, color=['#888888' if n == spec.BASELINE else '#3b75af' for n in names]
  )
  for bar, value, name in zip(bars, values, names):
    label = f'{value:g} / {rows[name]["num_tasks"]}'
    ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha='center', va='bottom')
  ax.set_ylabel('pass@2 (tasks)')
  ax.set_ylim(0, max(values + [1]) * 1.2)
  ax.tick_params(axis='x', labelrotation=30)
  fig.tight_layout()
  with atomic_io.replacing(path) as tmp:
    fig.savefig(tmp, dpi=120, format='png')
  plt.close(fig)


def write_table(workdir: str, sweep: spec.Sweep, levels: Mapping[str, str]) -> str:
  """Writes WORKDIR/table.{md,json,png} from the arms finished so far; returns the Markdown."""
  rows, pending = {}, []
  for a in sweep.arms:
    row = arm_row(workdir, a, levels, sweep.readouts)
    if row is None:
      pending.append(a.name)
    else:
      rows[a.name] = row
  with_sign_tests(rows)
  text = markdown(rows, pending)
  atomic_io.write_json(os.path.join(workdir, 'table.json'), {'arms': rows, 'pending': pending})
  atomic_io.write_text(os.path.join(workdir, 'table.md'), text)
  if rows:
    bar_chart(rows, os.path.join(workdir, 'table.png'))
  return text
