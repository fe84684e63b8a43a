"""One arm of a sweep, run in its own folder: the same stages and code path as launch.demo.

WORKDIR/<arm>/ holds what `demo.run_stages` writes (ttt/, predict_base/,
predict_ttt/) and three small files of the sweep's own:
  config.json   the arm's resolved config, written before any work: a rerun with
                another config for the same arm refuses to mix the two
  readout_<name>/  the headline prediction's candidates re-voted under each of the
                sweep's readouts (Sweep.readouts: 'oracle' is solved if any candidate
                is right), nothing decoded
  progress.jsonl  one line as each stage starts (the executor prints them)
  result.json   written last, atomically: the arm is finished (its stages'
                wall and compile seconds); a rerun skips it
A killed arm is simply run again: every stage resumes where it stopped. The arm's
folder is locked while it runs (run_lock.py): a second process on the same arm is
refused, naming the holder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from ttt_jax import atomic_io, checkpoint, demo
from ttt_jax.errors import UserError
from ttt_jax.infer import predict
from ttt_jax.run_lock import RunLock
from ttt_jax.stage_timer import StageTimer
from ttt_jax.sweep import spec

CONFIG_FILE, PROGRESS_FILE, RESULT_FILE = 'config.json', 'progress.jsonl', 'result.json'


def arm_dir(workdir: str, arm: spec.Arm) -> str:
  return os.path.join(workdir, arm.name)


def read_json(path: str) -> Any | None:
  """A small JSON file, or None if it is missing or torn (a kill mid-write)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def result_of(workdir: str, arm: spec.Arm) -> dict | None:
  """A finished arm's result.json, else None."""
  return read_json(os.path.join(arm_dir(workdir, arm), RESULT_FILE))


def _pin_config(directory: str, arm: spec.Arm, config_json: dict) -> None:
  path = os.path.join(directory, CONFIG_FILE)
  before = read_json(path)
  if before is None:
    atomic_io.write_json(path, config_json)
  elif before != config_json:
    raise UserError(
        f'arm {arm.name}: its config differs from the one {path} was run with (the sweep '
        'file changed?): use a new --workdir, or remove that arm folder to rerun it'
    )


def headline_stage(arm: spec.Arm) -> str:
  """The prediction an arm is scored by: with its adapters where it trained them."""
  return 'predict_ttt' if 'predict_ttt' in arm.stages else 'predict_base'


def readout_dir(directory: str, readout: str) -> str:
  return os.path.join(directory, f'readout_{readout}')


def _readouts(config, directory: str, stage: str, readouts) -> None:
  """Re-votes the stage's stored candidates under each readout into readout_<name>/."""
  run = predict.PredictRun.from_config(config.predict)
  for readout in readouts:
    vote = spec.readout_vote(run.predict.vote, readout)
    predict_config = dataclasses.replace(run.predict, vote=vote)
    source = os.path.join(directory, stage)
    predict.run_revote(run.selector, source, readout_dir(directory, readout), predict_config)


def run_arm(
    sweep: spec.Sweep, arm: spec.Arm, workdir: str, prepare: Callable = lambda config: None
) -> dict:
  """Runs (or resumes) the arm's stages unless it finished; returns its result.json.
  `prepare(config)` adjusts the arm's config in place first (the tuning flags)."""
  directory = arm_dir(workdir, arm)
  with RunLock(directory):
    return _run_arm(sweep, arm, directory, prepare)


def _run_arm(sweep: spec.Sweep, arm: spec.Arm, directory: str, prepare: Callable) -> dict:
  config = spec.arm_config(sweep, arm)
  prepare(config)
  _pin_config(directory, arm, json.loads(config.to_json_best_effort()))
  done = read_json(os.path.join(directory, RESULT_FILE))
  if done is not None:
    return done
  progress = os.path.join(directory, PROGRESS_FILE)
  on_start = lambda stage: checkpoint.append_record(progress, {'stage': stage, 'at': time.time()})
  timer = StageTimer(on_start=on_start)
  demo.run_stages(config, directory, arm.stages, timer)
  with timer.stage('readouts'):
    _readouts(config, directory, headline_stage(arm), sweep.readouts)
  result = {'arm': arm.name, 'stages': list(arm.stages), 'timings': timer.rows}
  atomic_io.write_json(os.path.join(directory, RESULT_FILE), result)
  on_start('finished')
  return result
