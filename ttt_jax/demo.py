"""The main job: TTT + augmented inference + voting, with and without TTT, one table.

Both predictions use the same model, prompts and voting; the only difference
is each task's own TTT adapter, so the table shows what TTT adds. A task
whose adapter could not be used shows as failed in the TTT column.
"""

from __future__ import annotations

import os

from ttt_jax import atomic_io, checked_read, checkpoint
from ttt_jax.data import generators
from ttt_jax.errors import blame
from ttt_jax.eval import metrics
from ttt_jax.infer import predict
from ttt_jax.model import builtin
from ttt_jax.run_lock import RunLock
from ttt_jax.stage_timer import StageTimer
from ttt_jax.train import ttt


def _loss_curves(workdir: str) -> dict[str, tuple[float, float]]:
  """Each task's (first, last) finite TTT loss, from ttt_metrics.jsonl."""
  curves = {}
  for record in checkpoint.read_log(os.path.join(workdir, 'ttt_metrics.jsonl')):
    finite = [loss for loss in record.get('losses', ()) if loss is not None]
    if finite:
      curves[record['task_id']] = (finite[0], finite[-1])
  return curves


def _details(predict_dir: str) -> metrics.Details:
  return checked_read.read_json_object(os.path.join(predict_dir, 'details.json'))


def run_demo(config, workdir: str) -> tuple[metrics.Score, metrics.Score]:
  """Trains every selected task's adapter, predicts without and with it, prints the table
  (and, with config.compare_free_decoding, the same without output-shape constraints),
  then where the time went: each stage's wall seconds and its compiling (timings.json).
  The workdir is locked meanwhile; the prediction's base model is checked before TTT."""
  with RunLock(workdir):
    with blame('config.predict.model.checkpoint_dir'):
      builtin.check_base_model(predict.PredictRun.from_config(config.predict).model)
    return _run_demo(config, workdir)


def _run_demo(config, workdir: str) -> tuple[metrics.Score, metrics.Score]:
  ttt_dir = os.path.join(workdir, 'ttt')
  timer = StageTimer()
  with timer.stage('ttt'):
    ttt.run_ttt(config.ttt, ttt_dir)
  scores = _compare(config.predict, workdir, ttt_dir, '', timer)
  if config.compare_free_decoding:
    free = config.predict.copy_and_resolve_references()
    free.shapes = 'none'
    _compare(free, workdir, ttt_dir, '_free', timer)
  timer.write(os.path.join(workdir, 'timings.json'))
  print('\nWall time by stage (a rerun in the same workdir resumes, so it skips done work):')
  print(timer.table())
  return scores


def _compare(predict_config, workdir: str, ttt_dir: str, suffix: str, timer: StageTimer):
  """Predicts without and with the adapters into predict_{base,ttt}SUFFIX/, writes and prints
  comparisonSUFFIX.md."""
  base_dir, tuned_dir = (os.path.join(workdir, f'predict_{d}{suffix}') for d in ('base', 'ttt'))
  adapters_dir = os.path.join(ttt_dir, 'adapters')
  # The base arm runs through zero adapters (B = 0: the base model's logits), so the arm
  # with TTT reuses every function it compiled: a cold run compiles predict once.
  with timer.stage(f'predict without TTT{suffix}'):
    base = predict.run_from_config(predict_config, base_dir, adapters_dir, zero_adapters=True)
  with timer.stage(f'predict with TTT{suffix}'):
    tuned = predict.run_from_config(predict_config, tuned_dir, adapters_dir, zero_adapters=False)
  table = comparison_table(
      base, tuned, _loss_curves(ttt_dir), _details(base_dir), _details(tuned_dir)
  )
  atomic_io.write_text(os.path.join(workdir, f'comparison{suffix}.md'), table + '\n')
  if suffix:
    print('\nWithout output-shape constraints (predict shapes=none):')
  print(table)
  return base, tuned


def _nll(task_id: str, details: metrics.Details) -> str:
  nll = metrics.truth_nll(task_id, details)
  return '-' if nll is None else f'{nll:.3f}'


def _score(result: metrics.TaskResult, details: metrics.Details) -> str:
  """A task's pass@2, or 'failed' when it could not be predicted (its reason is logged and
  in the arm's report)."""
  return 'failed' if metrics.failure(result.task_id, details) else f'{result.score:.2f}'


def _group(task_id: str) -> str:
  return 'generated' if generators.is_generated(task_id) else 'ARC'


def _group_totals(base: metrics.Score, tuned: metrics.Score) -> list[str]:
  """One pass@2 line per kind of task (generated, ARC) when the table mixes them."""
  groups = sorted({_group(t.task_id) for t in base.tasks}, reverse=True)
  if len(groups) < 2:
    return []
  lines = []
  for group in groups:
    b, t = ([s.score for s in score.tasks if _group(s.task_id) == group] for score in (base, tuned))
    lines.append(f'| {group} tasks | | | {sum(b):.2f} / {len(b)} | {sum(t):.2f} / {len(t)} |')
  return lines


def comparison_table(
    base: metrics.Score,
    tuned: metrics.Score,
    curves: dict[str, tuple[float, float]],
    base_details: metrics.Details,
    tuned_details: metrics.Details,
) -> str:
  """A Markdown table: per task, the TTT loss curve's ends, the true output's NLL per token
  and pass@2, without and with TTT; then the totals."""
  lines = [
      '| task | TTT loss first -> last | true-output NLL: no TTT -> TTT | no TTT | TTT |',
      '|---|---|---|---|---|',
  ]
  pairs = []  # (no TTT, TTT) true-output NLL of the tasks that have both
  for b, t in zip(base.tasks, tuned.tasks):
    loss = '%.3f -> %.3f' % curves[b.task_id] if b.task_id in curves else '-'
    before, after = (metrics.truth_nll(b.task_id, d) for d in (base_details, tuned_details))
    if before is not None and after is not None:
      pairs.append((before, after))
    lines.append(
        f'| {b.task_id} | {loss} | {_nll(b.task_id, base_details)} -> '
        f'{_nll(b.task_id, tuned_details)} | {_score(b, base_details)} '
        f'| {_score(t, tuned_details)} |'
    )
  nll = ''
  if pairs:
    lowered = sum(after < before for before, after in pairs)
    means = [sum(p[i] for p in pairs) / len(pairs) for i in (0, 1)]
    nll = f'mean {means[0]:.3f} -> {means[1]:.3f}; lower on {lowered} / {len(pairs)}'
  lines.append(
      f'| **total** | | **{nll}** | **{base.total:.2f} / {base.num_tasks}** '
      f'| **{tuned.total:.2f} / {tuned.num_tasks}** |'
  )
  lines += _group_totals(base, tuned)
  valid = [metrics.valid_candidates(d) for d in (base_details, tuned_details)]
  if all(total for _, total in valid):
    lines.append(
        '| well-formed candidate grids | | | '
        + ' | '.join(f'{ok} / {total} ({100 * ok / total:.1f}%)' for ok, total in valid)
        + ' |'
    )
  return '\n'.join(lines)
