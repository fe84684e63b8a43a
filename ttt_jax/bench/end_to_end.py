"""Benchmark: seconds per ARC task for the whole test-time pipeline: TTT
(`ttt.run_ttt`) then augmented inference with those adapters
(`predict.run_predict`), at the settings of two configs (launch/bench.py
passes configs/ttt.py and configs/predict.py, `runlocal` by default), on the
same model and tasks. Each stage is timed once, compilation included: that is
what a user waits for.
"""

from __future__ import annotations

import os
import tempfile
import time

from ttt_jax.bench import report
from ttt_jax.infer import predict
from ttt_jax.train import ttt


def bench_end_to_end(
    ttt_config,
    predict_config,
    selector: str = 'arc1/eval@slice=0:2',
    preset: str = 'tiny',
    ttt_overrides: dict | None = None,
    predict_overrides: dict | None = None,
    workdir: str | None = None,
    out: str | None = None,
) -> dict:
  """TTT + predict on `selector`; returns seconds per task of each stage.

  ttt_config / predict_config: ConfigDicts of configs/ttt.py and configs/predict.py
  (changed in place); ttt_overrides / predict_overrides: dotted fields on them,
  e.g. {'ttt.max_steps': 8}.
  """
  ttt_config.data.selector, ttt_config.model.preset = selector, preset
  predict_config.selector, predict_config.model.preset = selector, preset
  for config, overrides in ((ttt_config, ttt_overrides), (predict_config, predict_overrides)):
    for field, value in (overrides or {}).items():
      block, _, name = field.rpartition('.')
      target = config
      for part in filter(None, block.split('.')):
        target = target[part]
      if name not in target:
        raise ValueError(f'end-to-end override {field!r}: no such config field')
      target[name] = value
  # Inference runs the model TTT trained with (a random-init preset when none is given).
  for name in ('preset', 'init_seed', 'param_dtype', 'compute_dtype'):
    predict_config.model[name] = ttt_config.model[name]
  predict_config.model.checkpoint_dir = ttt_config.model.checkpoint_dir

  with tempfile.TemporaryDirectory() as tmp:
    workdir = workdir or tmp
    start = time.perf_counter()
    results = ttt.run_ttt(ttt_config, os.path.join(workdir, 'ttt'))
    ttt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    score = predict.run_from_config(
        predict_config,
        os.path.join(workdir, 'predict'),
        adapters_dir=os.path.join(workdir, 'ttt', 'adapters'),
    )
    predict_seconds = time.perf_counter() - start

  num_tasks = len({r.task for r in results})
  rows = [
      {'stage': name, 'seconds': s, 's/task': s / num_tasks}
      for name, s in (
          ('ttt', ttt_seconds),
          ('predict', predict_seconds),
          ('total', ttt_seconds + predict_seconds),
      )
  ]
  title = (
      f'End to end (TTT + inference, compiles included), {selector} ({num_tasks} tasks), '
      f'{preset}'
  )
  return report.report(
      title,
      rows,
      out=out,
      num_tasks=num_tasks,
      ttt_steps=[r.steps for r in results],
      score=None if score is None else score.total,
      overrides={'ttt': ttt_overrides, 'predict': predict_overrides},
  )
