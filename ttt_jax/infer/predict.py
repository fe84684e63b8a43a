"""The prediction pipeline: tasks + adapters -> candidates -> vote -> submission + report.

Per group of tasks: build every prompt variant (prompts.py) of every test
input, decode them in fixed-shape batches where each row uses its own task's
adapter (decode.py), turn tokens into grids (a malformed output is an invalid
candidate), optionally re-score the distinct answers under N augmentations
(score.py), invert and vote (vote.py). Each finished task is appended to
`output_dir/attempts.jsonl` at once, so a re-run skips the tasks already
there. At the end: `submission.json`, `details.json` ({task_id:
vote.to_details(...)}, what launch/evaluate.py reads) and, when the tasks
carry their test outputs, `report/report.{json,md}` (eval/metrics.py), each
written atomically. One process at a time per output_dir (run_lock.py).

A task whose adapter cannot be used (missing a file, truncated, unparseable,
or shaped for another model or rank) is `failed`: its record says why, naming
the file, and holds empty attempts (it scores 0, the submission stays
complete); every other task is predicted exactly as in a run without it. A
rerun tries a failed task again.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from ttt_jax import atomic_io, checkpoint
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.data import arc, augment
from ttt_jax.data.arc import Task
from ttt_jax.errors import DamagedFileError, UserError, blame
from ttt_jax.eval import metrics
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import decode, marc_vote, prompts, score, vote
from ttt_jax.infer.candidates import Candidate, decode_variants
from ttt_jax.infer.predict_config import DECODINGS, PredictConfig  # noqa: F401 (re-exported)
from ttt_jax.model import builtin
from ttt_jax.model.config import ModelConfig
from ttt_jax.run_lock import RunLock
from ttt_jax.train import shared

ATTEMPTS_FILE = 'attempts.jsonl'


@dataclasses.dataclass(frozen=True)
class PredictRun:
  """A configs/predict.py ConfigDict as frozen dataclasses (errors name the bad flag)."""

  predict: PredictConfig
  model: builtin.ModelSpec
  selector: str
  adapters_dir: str = ''  # adapters_dir/<task_id>[/adapter_subdir]/ (PEFT); '' = base model
  adapter_subdir: str = ''
  # The base model through zeros of adapters_dir's adapter shapes (B = 0: the same
  # logits): a base-model arm compiling exactly what the adapted arm then reuses.
  zero_adapters: bool = False

  @classmethod
  def from_config(cls, config) -> PredictRun:
    own = ('model', 'selector', 'adapters_dir', 'adapter_subdir', 'zero_adapters')
    return cls(
        predict=from_config_dict(PredictConfig, config, where='config', exclude=own),
        model=from_config_dict(builtin.ModelSpec, config.model, where='config.model'),
        selector=config.selector,
        adapters_dir=config.adapters_dir,
        adapter_subdir=config.adapter_subdir,
        zero_adapters=config.zero_adapters,
    )


# ------------------------------------------------------------------- loading


def load_adapters(
    adapters_dir: str,
    task_ids: Sequence[str],
    model_config: ModelConfig,
    subdir: str = '',
    zeros: bool = False,
) -> tuple[decode.Adapters | None, dict[str, str]]:
  """(the PEFT adapters adapters_dir/<task_id>[/subdir]/ stacked on a task axis [T, ...],
  {task_id: why its adapter cannot be used}).

  A task with no adapter at all (TTT found no example short enough, or did not
  reach it) is predicted by the base model, said in the log: its slot holds
  zeros, and B = 0 is exactly the base model. A task whose adapter is damaged
  (a file missing, truncated or unparseable; shapes of another model) fails,
  with a one-line reason naming the file; so does one whose LoRA config differs
  from the one most adapters of the group share (they stack into one shape).
  Its slot holds zeros. The adapters are None when no task has a usable one.
  With `zeros` every slot holds zeros (the base model for every task, in the
  adapters' shapes) and no task fails: its adapter is not used. A shared TTT run's
  adapters_dir (its manifest, train/shared.py) gives its one adapter to every task.
  """
  manifest = shared.read_manifest(adapters_dir)
  if manifest is not None:
    return _shared_adapter(adapters_dir, manifest, task_ids, model_config, subdir, zeros)
  trees, configs, failed = {}, {}, {}
  for task_id in task_ids:
    directory = os.path.join(adapters_dir, task_id, subdir)
    files = (checkpoint.ADAPTER_CONFIG, checkpoint.ADAPTER_WEIGHTS)
    if not any(os.path.exists(os.path.join(directory, f)) for f in files):
      logging.warning(
          'task %s: no adapter at %s (TTT had no example for it? with an in-step '
          'sweep, set adapter_subdir, e.g. lr_5e-05): predicting with the base model',
          task_id,
          directory,
      )
      continue
    try:
      trees[task_id], configs[task_id] = checkpoint.load_peft_adapter(directory, model_config)
    except DamagedFileError as e:
      failed[task_id] = str(e).replace('\n', ' ')
  if configs:
    counts = collections.Counter(configs.values())
    majority = max(counts, key=counts.get)  # a tie: the first task's
    for task_id, config in configs.items():
      if config != majority:
        path = os.path.join(adapters_dir, task_id, subdir, checkpoint.ADAPTER_CONFIG)
        failed[task_id] = (
            f'{path}: LoRA config {config} differs from {majority}, the one of the other '
            f'{counts[majority]} adapter(s) predicted with it (stacked adapters share one shape)'
        )
        del trees[task_id]
  if zeros:
    for task_id, reason in failed.items():
      logging.warning('task %s: its adapter is not used (zero_adapters): %s', task_id, reason)
    failed = {}
  if not trees:
    return None, failed
  zero = jax.tree.map(np.zeros_like, next(iter(trees.values())))
  stacked = [zero if zeros else trees.get(task_id, zero) for task_id in task_ids]
  return decode.Adapters.stack(stacked, majority), failed


def _shared_adapter(adapters_dir, manifest, task_ids, model_config, subdir, zeros):
  """load_adapters for a shared TTT run: its one adapter for every task (all fail if it
  is damaged)."""
  unseen = sorted(set(task_ids) - set(manifest['tasks']))
  if unseen:
    logging.warning("tasks %s: not in the shared adapter's training data", unseen[:5])
  directory = os.path.join(adapters_dir, manifest['adapter'], subdir)
  try:
    tree, config = checkpoint.load_peft_adapter(directory, model_config)
  except DamagedFileError as e:
    if zeros:
      logging.warning('the shared adapter is not used (zero_adapters): %s', e)
      return None, {}
    return None, {task_id: str(e).replace('\n', ' ') for task_id in task_ids}
  return decode.Adapters.shared(jax.tree.map(np.zeros_like, tree) if zeros else tree, config), {}


def failed_record(task: Task, reason: str) -> dict:
  """attempts.jsonl's record of a task that could not be predicted: status 'failed' and
  why (each test input's details say it too, for the report); empty attempts, so the
  submission stays complete and the task scores 0."""
  return {
      'task_id': task.id,
      'status': 'failed',
      'reason': reason,
      'attempts': [{'attempt_1': vote.EMPTY_GRID, 'attempt_2': vote.EMPTY_GRID} for _ in task.test],
      'details': [{'failed': reason} for _ in task.test],
      'num_variants': 0,
      'candidates': [[] for _ in task.test],
  }


def read_done(output_dir: str) -> dict[str, dict]:
  """{task_id: record} of the tasks already in attempts.jsonl (a torn line is redone; a
  failed task is tried again)."""
  records = checkpoint.read_log(os.path.join(output_dir, ATTEMPTS_FILE))
  return {r['task_id']: r for r in records if r.get('status') != 'failed'}


def read_records(output_dir: str) -> dict[str, dict]:
  """{task_id: its last record} in attempts.jsonl, failed ones included."""
  return {r['task_id']: r for r in checkpoint.read_log(os.path.join(output_dir, ATTEMPTS_FILE))}


# -------------------------------------------------------------------- voting


@functools.partial(jax.jit, static_argnames=('config',))
def _vote(grids, shapes, valid, transforms, scores, truth, *, config):
  attempts = vote.vote_transformed(
      grids, shapes, valid, transforms, scores_C=scores, truth=truth, config=config
  )
  inverted_grids, inverted_shapes = vote.inverse_candidates(grids, shapes, transforms)
  return attempts, inverted_grids, inverted_shapes


def _candidate_scores(
    params, model_config, task: Task, test_index: int, cands, adapter_kwargs: dict, config, fmt
) -> np.ndarray:
  """Each candidate's product-of-experts score (shared by equal answers), -inf if invalid."""
  originals = {}
  keys = []
  for c in cands:
    if c.grid is None:
      keys.append(None)
      continue
    g = prompts.invert_grid(c.grid, c.d8, c.colors)
    key = (g.shape, g.tobytes())
    originals.setdefault(key, g)
    keys.append(key)
  distinct = list(originals)
  transforms = score.scoring_transforms(
      task.id, test_index, config.score_augmentations, config.seed
  )
  values = score.score_candidates(
      params,
      model_config,
      task,
      test_index,
      [originals[k] for k in distinct],
      transforms,
      length_multiple=config.length_multiple,
      fmt=fmt,
      **adapter_kwargs,
  )
  by_key = dict(zip(distinct, values))
  return np.array([-np.inf if k is None else by_key[k] for k in keys], np.float32)


def vote_test_input(
    cands: Sequence[Candidate],
    config: PredictConfig,
    scores: np.ndarray | None = None,
    truth: np.ndarray | None = None,
) -> tuple[dict, dict]:
  """One test input's Kaggle entry and details from its candidates (maybe none or all bad);
  `truth`, the true output, only for the 'oracle' readout."""
  if config.vote.method in vote.HOST_METHODS:
    return marc_vote.vote_candidates(cands)
  C = max(8, 1 << max(len(cands) - 1, 0).bit_length())  # a few padded sizes: few compiles
  grids = np.full((C, augment.SIZE, augment.SIZE), augment.FILL, np.int32)
  shapes = np.ones((C, 2), np.int32)
  valid = np.zeros((C,), bool)
  d8 = np.zeros((C,), np.int32)
  colors = np.tile(np.arange(arc.NUM_COLORS, dtype=np.int32), (C, 1))
  for i, c in enumerate(cands):
    d8[i], colors[i] = c.d8, c.colors
    if c.grid is not None:
      grids[i], shapes[i] = augment.pad_grid(c.grid)
      valid[i] = True
  padded_scores = None
  if scores is not None:
    padded_scores = np.full((C,), -1e30, np.float32)
    padded_scores[: len(cands)] = np.where(np.isfinite(scores), scores, -1e30)
  padded_truth = None if truth is None else augment.pad_grid(truth)
  attempts, inv_grids, inv_shapes = _vote(
      grids,
      shapes,
      valid,
      augment.Transform(d8, colors),
      padded_scores,
      padded_truth,
      config=config.vote,
  )
  attempts = jax.tree.map(lambda x: np.asarray(x)[None], attempts)
  entry = vote.to_submission(np.asarray(inv_grids)[None], np.asarray(inv_shapes)[None], attempts)[0]
  details = vote.to_details(attempts, d8[None], augment.D8_NAMES)[0]
  return entry, {**details, 'num_candidates': len(cands), 'num_valid': int(valid.sum())}


def truth_nll(
    params,
    model_config,
    task: Task,
    test_index: int,
    adapter_kwargs: dict,
    config,
    fmt: Format = COMPACT,
) -> float | None:
  """Mean NLL per token of the true test output (its answer tokens) given the unaugmented task.

  A diagnostic for reports, never used to predict: it shows how far TTT moved
  the model towards the answer even when no attempt is exactly right. None
  when the output is unknown.
  """
  truth = task.test[test_index].output
  if truth is None:
    return None
  identity = (0, prompts.IDENTITY_COLORS)
  _, target_mask = score.scoring_sequences(task, test_index, truth, *identity, fmt)
  (logprob,) = score.score_candidates(
      params,
      model_config,
      task,
      test_index,
      [truth],
      [identity],
      length_multiple=config.length_multiple,
      fmt=fmt,
      **adapter_kwargs,
  )
  return float(-logprob / target_mask.sum())


def predict_task(
    params,
    model_config,
    task: Task,
    num_variants: int,
    cands: Sequence[Candidate],
    adapter_kwargs: dict,
    config: PredictConfig,
    fmt: Format = COMPACT,
) -> dict:
  """One task's record for attempts.jsonl: entries, details (with `truth_nll` where the
  test output is known) and the candidates per test input. `adapter_kwargs`: the task's
  `lora=` / `lora_config=` (decode.Adapters.model_kwargs), {} for the base model."""
  entries, details, stored = [], [], []
  for n in range(len(task.test)):
    mine = [c for c in cands if c.test_index == n]
    scores = None
    if config.score_augmentations > 0:
      scores = _candidate_scores(params, model_config, task, n, mine, adapter_kwargs, config, fmt)
    entry, info = vote_test_input(mine, config, scores, _oracle_truth(task, n, config))
    nll = truth_nll(params, model_config, task, n, adapter_kwargs, config, fmt)
    entries.append(entry)
    details.append(info if nll is None else {**info, 'truth_nll': nll})
    stored.append(
        [c.to_json(None if scores is None else float(scores[i])) for i, c in enumerate(mine)]
    )
  return {
      'task_id': task.id,
      'attempts': entries,
      'details': details,
      'num_variants': num_variants,
      'candidates': stored,
  }


def _oracle_truth(task: Task, test_index: int, config: PredictConfig) -> np.ndarray | None:
  """The true output the 'oracle' readout needs (None for every other method)."""
  if config.vote.method != 'oracle':
    return None
  truth = task.test[test_index].output
  if truth is None:
    raise ValueError(
        f"task {task.id} test {test_index}: vote method 'oracle' needs the true test output, "
        'and the task has none'
    )
  return truth


def revote_record(record: dict, task: Task, config: PredictConfig) -> dict:
  """A task's record voted again from its stored candidates under `config.vote`: voting
  variants without decoding again. Diagnostics (truth_nll) are kept; the task gives the
  true outputs the 'oracle' readout needs; a failed task stays failed."""
  task_id = record['task_id']
  if record.get('status') == 'failed':
    return record
  if 'candidates' not in record:
    raise ValueError(
        f'task {task_id}: its attempts record has no stored candidates '
        '(predicted by an older version); predict it again'
    )
  entries, details = [], []
  for n, (stored, old) in enumerate(zip(record['candidates'], record['details'])):
    cands = [Candidate.from_json(task_id, n, c) for c in stored]
    scores = None
    if config.vote.rank_mode != 'votes':
      if any(c['score'] is None for c in stored):
        raise ValueError(
            f'task {task_id} test {n}: vote rank_mode {config.vote.rank_mode!r} '
            'needs scores, and the prediction computed none '
            '(score_augmentations=0)'
        )
      scores = np.array([c['score'] for c in stored], np.float32)
    entry, info = vote_test_input(cands, config, scores, _oracle_truth(task, n, config))
    entries.append(entry)
    details.append({**info, **({'truth_nll': old['truth_nll']} if 'truth_nll' in old else {})})
  return {**record, 'attempts': entries, 'details': details}


def _load_tasks(selector: str, config: PredictConfig) -> list[Task]:
  with blame('config.selector'):
    tasks, _ = arc.load_tasks(selector)
  if not tasks:
    raise UserError(f'--config.selector: {selector!r} selected no valid tasks')
  unsolved = [t.id for t in tasks if any(p.output is None for p in t.test)]
  if config.vote.method == 'oracle' and unsolved:
    raise UserError(
        f"--config.vote.method: 'oracle' needs the true test outputs; tasks {unsolved[:5]} "
        'have none'
    )
  return tasks


def run_revote(
    selector: str, from_dir: str, output_dir: str, config: PredictConfig
) -> metrics.Score | None:
  """Votes every selected task again from from_dir/attempts.jsonl into output_dir (a new
  attempts.jsonl, submission, details and report); nothing is decoded."""
  with RunLock(output_dir):
    tasks = _load_tasks(selector, config)
    records = read_records(from_dir)
    missing = [t.id for t in tasks if t.id not in records]
    if missing:
      raise UserError(
          f'--revote_from: {os.path.join(from_dir, ATTEMPTS_FILE)} has no record of tasks '
          f'{missing[:5]}{"..." if len(missing) > 5 else ""}; predict them first'
      )
    revoted = {t.id: revote_record(records[t.id], t, config) for t in tqdm(tasks, desc='revote')}
    attempts = [revoted[t.id] for t in tasks]
    checkpoint.write_records(os.path.join(output_dir, ATTEMPTS_FILE), attempts)
    return write_outputs(revoted, tasks, output_dir)


# ------------------------------------------------------------------ pipeline


def predict_tasks(
    params: dict,
    model_config: ModelConfig,
    tasks: Sequence[Task],
    output_dir: str,
    config: PredictConfig,
    adapters_dir: str = '',
    adapter_subdir: str = '',
    fmt: Format = COMPACT,
    zero_adapters: bool = False,
) -> dict[str, dict]:
  """Predicts every task not yet in output_dir/attempts.jsonl, appending as tasks finish;
  returns all records (old and new) by task id. `zero_adapters`: see PredictRun."""
  os.makedirs(output_dir, exist_ok=True)
  done = read_done(output_dir)
  todo = [t for t in tasks if t.id not in done]
  if done:
    logging.info(
        'Resuming: %d of %d tasks already in %s',
        len(tasks) - len(todo),
        len(tasks),
        os.path.join(output_dir, ATTEMPTS_FILE),
    )
  path = os.path.join(output_dir, ATTEMPTS_FILE)
  with tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc='predict') as bar:
    for start in range(0, len(todo), config.tasks_per_group):
      group = todo[start : start + config.tasks_per_group]
      adapters, failed = None, {}
      if adapters_dir:
        adapters, failed = load_adapters(
            adapters_dir, [t.id for t in group], model_config, adapter_subdir, zero_adapters
        )
      # A failed task decodes nothing: the others' batches (one task each) stay as they were.
      per_task = [
          [] if t.id in failed else prompts.task_variants(t, config.prompts, fmt) for t in group
      ]
      variants = [v for vs in per_task for v in vs]
      task_index = [t for t, vs in enumerate(per_task) for _ in vs]
      cands = []
      if variants:
        cands = decode_variants(params, model_config, variants, task_index, adapters, config, fmt)
      for t, task in enumerate(group):
        if task.id in failed:
          logging.error('task %s failed: %s', task.id, failed[task.id])
          record = failed_record(task, failed[task.id])
        else:
          mine = [c for c in cands if c.task_id == task.id]
          task_params, adapter = decode.task_model(params, adapters, t, config.merge_adapters)
          adapter_kwargs = {} if adapter is None else adapter.model_kwargs()
          record = predict_task(
              task_params, model_config, task, len(per_task[t]), mine, adapter_kwargs, config, fmt
          )
        checkpoint.append_record(path, record)
        done[task.id] = record
        bar.update(1)
  return done


def write_outputs(
    records: dict[str, dict], tasks: Sequence[Task], output_dir: str
) -> metrics.Score | None:
  """submission.json and details.json for `tasks`; a scored report when outputs are known."""
  submission = {t.id: records[t.id]['attempts'] for t in tasks}
  details = {t.id: records[t.id]['details'] for t in tasks}
  metrics.write_submission(os.path.join(output_dir, 'submission.json'), submission)
  atomic_io.write_json(os.path.join(output_dir, 'details.json'), details)
  if not tasks or any(p.output is None for t in tasks for p in t.test):
    logging.info('Test outputs unknown: wrote the submission, no score.')
    return None
  solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
  result = metrics.score_submission(submission, solutions, metrics.known_levels())
  metrics.write_report(os.path.join(output_dir, 'report'), result, details)
  return result


def run_predict(run: PredictRun, output_dir: str) -> metrics.Score | None:
  """What launch/predict.py runs: load, predict (resumably), write submission and report;
  output_dir is locked meanwhile (a second process on it is refused)."""
  with RunLock(output_dir):
    return _run_predict(run, output_dir)


def _run_predict(run: PredictRun, output_dir: str) -> metrics.Score | None:
  tasks = _load_tasks(run.selector, run.predict)
  with blame('config.model.checkpoint_dir'):
    model_config, params, _ = builtin.load_base_model(run.model)
    fmt = builtin.load_format(run.model, model_config)
  if not run.adapters_dir:
    logging.info('No adapters_dir: predicting with the base model for every task.')
  elif not os.path.isdir(run.adapters_dir):
    raise UserError(f'--config.adapters_dir: {run.adapters_dir!r} is not a directory')
  elif run.zero_adapters:
    logging.info(
        'zero_adapters: the base model, through zeros of the adapters in %s', run.adapters_dir
    )
  records = predict_tasks(
      params,
      model_config,
      tasks,
      output_dir,
      run.predict,
      run.adapters_dir,
      run.adapter_subdir,
      fmt,
      run.zero_adapters,
  )
  result = write_outputs(records, tasks, output_dir)
  if result is not None:
    logging.info('Score: %s', metrics.summary(result))
  failed = [t.id for t in tasks if records[t.id].get('status') == 'failed']
  if failed:
    logging.error('%d task(s) failed (their adapters; see attempts.jsonl): %s', len(failed), failed)
  return result


def run_from_config(
    c, output_dir: str, adapters_dir: str | None = None, zero_adapters: bool | None = None
) -> metrics.Score | None:
  """run_predict for a configs/predict.py ConfigDict; `adapters_dir` and `zero_adapters`
  override c's."""
  run = PredictRun.from_config(c)
  if adapters_dir is not None:
    run = dataclasses.replace(run, adapters_dir=adapters_dir)
  if zero_adapters is not None:
    run = dataclasses.replace(run, zero_adapters=zero_adapters)
  return run_predict(run, output_dir)
