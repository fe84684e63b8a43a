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


# A demo run's stages, each in its own folder of the workdir; the sweep's arms name theirs.
STAGES = ('ttt', 'predict_base', 'predict_ttt')
_STAGE_TITLES = {
    'ttt': 'ttt',
    'predict_base': 'predict without TTT',
    'predict_ttt': 'predict with TTT',
}


def run_stages(
    config, workdir: str, stages=STAGES, timer: StageTimer | None = None, suffix: str = ''
) -> dict[str, metrics.Score | None]:
  """TTT into workdir/ttt/, then predictions without and with its adapters into
  workdir/predict_{base,ttt}SUFFIX/, each stage if named; returns the predictions' scores.

  The base arm runs through zero adapters when there are adapters (B = 0: the base
  model's logits), so the arm with TTT reuses every function it compiled: a cold run
  compiles predict once. Every stage resumes where a killed run stopped."""
  timer = timer or StageTimer()
  ttt_dir = os.path.join(workdir, 'ttt')
  adapters_dir = os.path.join(ttt_dir, 'adapters') if 'ttt' in stages else ''
  if 'ttt' in stages and not suffix:
    with timer.stage('ttt'):
      ttt.run_ttt(config.ttt, ttt_dir)
  scores = {}
  for stage, zero_adapters in (('predict_base', True), ('predict_ttt', False)):
    if stage in stages:
      with timer.stage(_STAGE_TITLES[stage] + suffix):
        scores[stage] = predict.run_from_config(
            config.predict, os.path.join(workdir, stage + suffix), adapters_dir, zero_adapters
        )
  return scores


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
  timer = StageTimer()
  scores = _compare(config, workdir, timer, '')
  if config.compare_free_decoding:
    free = config.copy_and_resolve_references()
    free.predict.shapes = 'none'
    _compare(free, workdir, timer, '_free')
  timer.write(os.path.join(workdir, 'timings.json'))
  print('\nWall time by stage (a rerun in the same workdir resumes, so it skips done work):')
  print(timer.table())
  return scores


def _compare(config, workdir: str, timer: StageTimer, suffix: str):
  """Runs the stages (TTT once, predictions per suffix), writes and prints comparisonSUFFIX.md."""
  scores = run_stages(config, workdir, STAGES, timer, suffix)
  base, tuned = scores['predict_base'], scores['predict_ttt']
  table = comparison_table(
      base,
      tuned,
      _loss_curves(os.path.join(workdir, 'ttt')),
      *(_details(os.path.join(workdir, f'predict_{arm}{suffix}')) for arm in ('base', 'ttt')),
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


def _subtotal(label: str, arms: tuple[metrics.Score, metrics.Score], keep) -> str:
  """One row: both arms' pass@2 by test input and tasks fully solved, over the tasks kept."""
  cells = []
  for score in arms:
    results = [t for t in score.tasks if keep(t)]
    total = sum(t.score for t in results)
    cells.append(f'{total:.2f} / {len(results)}; {sum(t.solved for t in results)} solved')
  return f'| {label} | | | ' + ' | '.join(cells) + ' |'


def _subtotals(base: metrics.Score, tuned: metrics.Score) -> list[str]:
  """Rows per kind of task (generated, ARC) when the table mixes them, and per level."""
  lines = []
  groups = sorted({_group(t.task_id) for t in base.tasks}, reverse=True)
  if len(groups) > 1:
    for group in groups:
      lines.append(_subtotal(f'{group} tasks', (base, tuned), lambda t: _group(t.task_id) == group))
  for level in base.by_level:
    lines.append(_subtotal(f'level {level}', (base, tuned), lambda t: t.level == level))
  return lines


def comparison_table(
    base: metrics.Score,
    tuned: metrics.Score,
    curves: dict[str, tuple[float, float]],
    base_details: metrics.Details,
    tuned_details: metrics.Details,
) -> str:
  """A Markdown table: per task, the TTT loss curve's ends, the true output's NLL per token
  and pass@2 (by test input), without and with TTT; then the totals both ways (by test
  input, and tasks with every test input right), per kind of task and per level."""
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
  lines.append(
      f'| **tasks fully solved** | | | **{base.num_solved} / {base.num_tasks}** '
      f'| **{tuned.num_solved} / {tuned.num_tasks}** |'
  )
  lines += _subtotals(base, tuned)
  valid = [metrics.valid_candidates(d) for d in (base_details, tuned_details)]
  if all(total for _, total in valid):
    lines.append(
        '| well-formed candidate grids | | | '
        + ' | '.join(f'{ok} / {total} ({100 * ok / total:.1f}%)' for ok, total in valid)
        + ' |'
    )
  return '\n'.join(lines)
