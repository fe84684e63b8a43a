"""The main job: TTT + augmented inference + voting, with and without TTT, one table.

Both predictions use the same model, prompts and voting; the only difference
is each task's own TTT adapter, so the table shows what TTT adds.
"""

from __future__ import annotations

import json
import os

from ttt_jax.eval import metrics
from ttt_jax.infer import predict
from ttt_jax.train import ttt


def _loss_curves(workdir: str) -> dict[str, tuple[float, float]]:
  """Each task's (first, last) finite TTT loss, from ttt_metrics.jsonl."""
  curves = {}
  with open(os.path.join(workdir, 'ttt_metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      finite = [loss for loss in record.get('losses', ()) if loss is not None]
      if finite:
        curves[record['task_id']] = (finite[0], finite[-1])
  return curves


def run_demo(config, workdir: str) -> tuple[metrics.Score, metrics.Score]:
  """Trains every selected task's adapter, predicts without and with it, prints the table."""
  ttt_dir = os.path.join(workdir, 'ttt')
  ttt.run_ttt(config.ttt, ttt_dir)
  base = predict.run_from_config(config.predict, os.path.join(workdir, 'predict_base'),
                                 adapters_dir='')
  tuned = predict.run_from_config(config.predict, os.path.join(workdir, 'predict_ttt'),
                                  adapters_dir=os.path.join(ttt_dir, 'adapters'))
  print(comparison_table(base, tuned, _loss_curves(ttt_dir)))
  return base, tuned


def comparison_table(base: metrics.Score, tuned: metrics.Score,
                     curves: dict[str, tuple[float, float]]) -> str:
  """A Markdown table: per task, the TTT loss curve's ends and pass@2 without and with TTT."""
  lines = ['| task | TTT loss first -> last | no TTT | TTT |', '|---|---|---|---|']
  for b, t in zip(base.tasks, tuned.tasks):
    loss = '%.3f -> %.3f' % curves[b.task_id] if b.task_id in curves else '-'
    lines.append(f'| {b.task_id} | {loss} | {b.score:.2f} | {t.score:.2f} |')
  lines.append(f'| **total** | | **{base.total:.2f} / {base.num_tasks}** '
               f'| **{tuned.total:.2f} / {tuned.num_tasks}** |')
  return '\n'.join(lines)
