"""The prediction pipeline: tasks + adapters -> candidates -> vote -> submission + report.

Per group of tasks: build every prompt variant (prompts.py) of every test
input, decode them in fixed-shape batches where each row uses its own task's
adapter (decode.py), turn tokens into grids (a malformed output is an invalid
candidate), optionally re-score the distinct answers under N augmentations
(score.py), invert and vote (vote.py). Each finished task is appended to
`output_dir/attempts.jsonl` at once, so a re-run skips the tasks already
there. At the end: `submission.json`, `details.json` ({task_id:
vote.to_details(...)}, what launch/evaluate.py reads) and, when the tasks
carry their test outputs, `report/report.{json,md}` (eval/metrics.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from ttt_jax import checkpoint
from ttt_jax.data import arc, augment
from ttt_jax.data.arc import Task
from ttt_jax.eval import metrics
from ttt_jax.infer import decode, prompts, score, vote
from ttt_jax.model import builtin, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig

DECODINGS = ('greedy', 'sample', 'dfs')
ATTEMPTS_FILE = 'attempts.jsonl'


@dataclasses.dataclass(frozen=True)
class PredictConfig:
  decoding: str = 'greedy'  # one of DECODINGS
  temperature: float = 1.0  # 'sample'
  dfs_threshold: float = 0.1  # 'dfs': keep completions with probability >= this
  # Per row, at most its largest plausible answer (prompts.Variant.answer_budget): an answer
  # larger than every demonstration output and the test input is cut short (invalid).
  max_new_tokens: int = decode.MAX_GRID_TOKENS
  batch_size: int = 16  # decode rows per call (fixed: one compile per length)
  tasks_per_group: int = 8  # tasks whose adapters are stacked and decoded together
  length_multiple: int = 64  # prompt lengths rounded up to this (fewer compiles)
  score_augmentations: int = 0  # product-of-experts re-scoring; 0 = off
  seed: int = 0
  prompts: prompts.PromptConfig = prompts.PromptConfig()
  vote: vote.VoteConfig = vote.VoteConfig()

  def __post_init__(self):
    if self.decoding not in DECODINGS:
      raise ValueError(f'PredictConfig.decoding {self.decoding!r} is not one of {DECODINGS}')
    if self.vote.rank_mode != 'votes' and self.score_augmentations < 1:
      raise ValueError(
          f'PredictConfig: vote rank_mode {self.vote.rank_mode!r} needs scores; '
          'set score_augmentations >= 1'
      )
    for name in ('batch_size', 'tasks_per_group', 'length_multiple', 'max_new_tokens'):
      if getattr(self, name) < 1:
        raise ValueError(f'PredictConfig.{name} must be >= 1, got {getattr(self, name)}')


def config_from(c) -> PredictConfig:
  """The frozen PredictConfig of a configs/predict.py ConfigDict."""
  p = c.prompts
  return PredictConfig(
      decoding=c.decoding,
      temperature=c.temperature,
      dfs_threshold=c.dfs_threshold,
      max_new_tokens=c.max_new_tokens,
      batch_size=c.batch_size,
      tasks_per_group=c.tasks_per_group,
      length_multiple=c.length_multiple,
      score_augmentations=c.score_augmentations,
      seed=c.seed,
      prompts=prompts.PromptConfig(
          d8=tuple(p.d8),
          color_perms=p.color_perms,
          orders=p.orders,
          leave_out=p.leave_out,
          max_variants=p.max_variants,
          max_len=p.max_len,
          seed=c.seed,
      ),
      vote=vote.VoteConfig(**c.vote),
  )


# ------------------------------------------------------------------- loading


def load_adapters(
    adapters_dir: str, task_ids: Sequence[str], model_config: ModelConfig, subdir: str = ''
) -> tuple[dict, LoraConfig] | None:
  """The PEFT adapters adapters_dir/<task_id>[/subdir]/ stacked on a task axis [T, ...].

  A task with no adapter (TTT found no example short enough, or did not reach
  it) is predicted by the base model, said in the log: its slot holds zeros,
  and B = 0 is exactly the base model. None when no task of the group has one.
  """
  trees, lora_config = {}, None
  for task_id in task_ids:
    directory = os.path.join(adapters_dir, task_id, subdir)
    if not os.path.exists(os.path.join(directory, checkpoint.ADAPTER_CONFIG)):
      logging.warning(
          'task %s: no adapter at %s (TTT had no example for it? with an lr sweep, '
          'set adapter_subdir, e.g. lr_5e-05): predicting with the base model',
          task_id,
          directory,
      )
      continue
    tree, config = checkpoint.load_peft_adapter(directory, model_config)
    if lora_config is not None and config != lora_config:
      raise ValueError(
          f'task {task_id}: adapter config {config} differs from {lora_config} '
          f'(of task {next(iter(trees))}); stacked adapters must share one shape'
      )
    trees[task_id] = tree
    lora_config = config
  if not trees:
    return None
  zeros = jax.tree.map(np.zeros_like, next(iter(trees.values())))
  stacked = [trees.get(task_id, zeros) for task_id in task_ids]
  return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *stacked), lora_config


def read_done(output_dir: str) -> dict[str, dict]:
  """{task_id: record} of the tasks already in attempts.jsonl (a torn line is redone)."""
  return {r['task_id']: r for r in checkpoint.read_log(os.path.join(output_dir, ATTEMPTS_FILE))}


# ------------------------------------------------------------------ decoding


@dataclasses.dataclass(frozen=True)
class Candidate:
  variant: prompts.Variant
  grid: np.ndarray | None  # in the variant's frame; None when the output was malformed
  logprob: float


def _bucket(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def row_key(seed: int, variant: prompts.Variant, ordinal: int) -> jax.Array:
  """The sampling key of a task's `ordinal`-th variant: a function of the task, never of
  the batch, group or task selection it is decoded in."""
  key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(variant.task_id.encode()) & 0x7FFFFFFF)
  return jax.random.fold_in(key, ordinal)


def decode_variants(
    params: dict,
    model_config: ModelConfig,
    variants: Sequence[prompts.Variant],
    task_index: Sequence[int],
    adapters: tuple[dict, LoraConfig] | None,
    config: PredictConfig,
) -> list[Candidate]:
  """Candidates of every variant (one each, or every DFS completion), rows batched.

  Each row has its own budget (its answer budget, capped by max_new_tokens) and, when
  sampling, its own key, so its candidates do not depend on the other rows of its batch.
  """
  order = sorted(range(len(variants)), key=lambda i: len(variants[i].tokens))  # less padding
  ordinals, seen = [], {}
  for v in variants:
    ordinals.append(seen.get(v.task_id, 0))
    seen[v.task_id] = ordinals[-1] + 1
  candidates: dict[int, list[Candidate]] = {}
  for start in range(0, len(order), config.batch_size):
    rows = order[start : start + config.batch_size]
    rows_padded = rows + [rows[-1]] * (config.batch_size - len(rows))
    tokens, lengths = decode.pad_prompts(
        [variants[i].tokens for i in rows], config.batch_size, config.length_multiple
    )
    budget_B = np.array(
        [min(config.max_new_tokens, variants[i].answer_budget) for i in rows_padded], np.int32
    )
    max_new = min(config.max_new_tokens, _bucket(int(budget_B.max()), 32))  # few compiles
    index = np.array([task_index[i] for i in rows_padded], np.int32)
    row_adapters = (
        None if adapters is None else decode.Adapters(adapters[0], jnp.asarray(index), adapters[1])
    )
    if config.decoding == 'dfs':
      out = decode.dfs(
          params,
          model_config,
          tokens,
          lengths,
          threshold=config.dfs_threshold,
          adapters=row_adapters,
          max_new_B=budget_B,
          max_new_tokens=max_new,
      )
      seqs, logps, found = (np.asarray(x) for x in out)
      for b, i in enumerate(rows):
        candidates[i] = [
            Candidate(variants[i], decode.to_grid(seqs[b, k]), float(logps[b, k]))
            for k in np.flatnonzero(found[b])
        ]
    else:
      sampler = (
          decode.Greedy() if config.decoding == 'greedy' else decode.Sampling(config.temperature)
      )
      rng_B = jnp.stack([row_key(config.seed, variants[i], ordinals[i]) for i in rows_padded])
      out = decode.generate(
          params,
          model_config,
          tokens,
          lengths,
          sampler=sampler,
          rng_B=rng_B,
          adapters=row_adapters,
          max_new_B=budget_B,
          max_new_tokens=max_new,
      )
      seqs, logps = np.asarray(out.tokens_BN), np.asarray(out.logprob_B)
      for b, i in enumerate(rows):
        candidates[i] = [Candidate(variants[i], decode.to_grid(seqs[b]), float(logps[b]))]
  return [c for i in range(len(variants)) for c in candidates[i]]


# -------------------------------------------------------------------- voting


@functools.partial(jax.jit, static_argnames=('config',))
def _vote(grids, shapes, valid, transforms, scores, *, config):
  attempts = vote.vote_transformed(grids, shapes, valid, transforms, scores_C=scores, config=config)
  inverted_grids, inverted_shapes = vote.inverse_candidates(grids, shapes, transforms)
  return attempts, inverted_grids, inverted_shapes


def _candidate_scores(
    params, model_config, task, test_index, cands, lora, lora_config, config: PredictConfig
) -> np.ndarray:
  """Each candidate's product-of-experts score (shared by equal answers), -inf if invalid."""
  originals = {}
  keys = []
  for c in cands:
    if c.grid is None:
      keys.append(None)
      continue
    g = prompts.invert_grid(c.grid, c.variant.d8, c.variant.colors)
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
      lora=lora,
      lora_config=lora_config,
      length_multiple=config.length_multiple,
  )
  by_key = dict(zip(distinct, values))
  return np.array([-np.inf if k is None else by_key[k] for k in keys], np.float32)


def vote_test_input(
    cands: Sequence[Candidate], config: PredictConfig, scores: np.ndarray | None = None
) -> tuple[dict, dict]:
  """One test input's Kaggle entry and details from its candidates (maybe none or all bad)."""
  C = max(8, 1 << max(len(cands) - 1, 0).bit_length())  # a few padded sizes: few compiles
  grids = np.full((C, augment.SIZE, augment.SIZE), augment.FILL, np.int32)
  shapes = np.ones((C, 2), np.int32)
  valid = np.zeros((C,), bool)
  d8 = np.zeros((C,), np.int32)
  colors = np.tile(np.arange(augment.NUM_COLORS, dtype=np.int32), (C, 1))
  for i, c in enumerate(cands):
    d8[i], colors[i] = c.variant.d8, c.variant.colors
    if c.grid is not None:
      grids[i], shapes[i] = augment.pad_grid(c.grid)
      valid[i] = True
  padded_scores = None
  if scores is not None:
    padded_scores = np.full((C,), -1e30, np.float32)
    padded_scores[: len(cands)] = np.where(np.isfinite(scores), scores, -1e30)
  attempts, inv_grids, inv_shapes = _vote(
      grids, shapes, valid, augment.Transform(d8, colors), padded_scores, config=config.vote
  )
  attempts = jax.tree.map(lambda x: np.asarray(x)[None], attempts)
  entry = vote.to_submission(np.asarray(inv_grids)[None], np.asarray(inv_shapes)[None], attempts)[0]
  details = vote.to_details(attempts, d8[None], augment.D8_NAMES)[0]
  return entry, {**details, 'num_candidates': len(cands), 'num_valid': int(valid.sum())}


def truth_nll(
    params, model_config, task: Task, test_index: int, lora, lora_config, config: PredictConfig
) -> float | None:
  """Mean NLL per token of the true test output (rows + EOS) given the unaugmented task.

  A diagnostic for reports, never used to predict: it shows how far TTT moved
  the model towards the answer even when no attempt is exactly right. None
  when the output is unknown.
  """
  truth = task.test[test_index].output
  if truth is None:
    return None
  identity = (0, prompts.IDENTITY_COLORS)
  _, target_mask = score.scoring_sequences(task, test_index, truth, *identity)
  (logprob,) = score.score_candidates(
      params,
      model_config,
      task,
      test_index,
      [truth],
      [identity],
      lora=lora,
      lora_config=lora_config,
      length_multiple=config.length_multiple,
  )
  return float(-logprob / target_mask.sum())


def _stored(c: Candidate, score: float | None) -> dict:
  """A candidate as attempts.jsonl keeps it (in its variant's frame), for re-voting."""
  return {
      'd8': int(c.variant.d8),
      'colors': [int(x) for x in c.variant.colors],
      'grid': None if c.grid is None else c.grid.tolist(),
      'logprob': c.logprob,
      'score': score,
  }


def predict_task(
    params,
    model_config,
    task: Task,
    variants,
    cands: Sequence[Candidate],
    lora,
    lora_config,
    config: PredictConfig,
) -> dict:
  """One task's record for attempts.jsonl: entries, details (with `truth_nll` where the
  test output is known) and the candidates per test input."""
  entries, details, stored = [], [], []
  for n in range(len(task.test)):
    mine = [c for c in cands if c.variant.test_index == n]
    scores = None
    if config.score_augmentations > 0:
      scores = _candidate_scores(params, model_config, task, n, mine, lora, lora_config, config)
    entry, info = vote_test_input(mine, config, scores)
    nll = truth_nll(params, model_config, task, n, lora, lora_config, config)
    entries.append(entry)
    details.append(info if nll is None else {**info, 'truth_nll': nll})
    stored.append(
        [_stored(c, None if scores is None else float(scores[i])) for i, c in enumerate(mine)]
    )
  return {
      'task_id': task.id,
      'attempts': entries,
      'details': details,
      'num_variants': len(variants),
      'candidates': stored,
  }


def revote_record(record: dict, config: PredictConfig) -> dict:
  """A task's record voted again from its stored candidates under `config.vote`: voting
  variants without decoding again. Diagnostics (truth_nll) are kept."""
  task_id = record['task_id']
  if 'candidates' not in record:
    raise ValueError(
        f'task {task_id}: its attempts record has no stored candidates '
        '(predicted by an older version); predict it again'
    )
  entries, details = [], []
  for n, (stored, old) in enumerate(zip(record['candidates'], record['details'])):
    cands = [
        Candidate(
            prompts.Variant(task_id, n, c['d8'], tuple(c['colors']), (), np.zeros(0, np.int32), 0),
            None if c['grid'] is None else np.asarray(c['grid'], np.int32),
            c['logprob'],
        )
        for c in stored
    ]
    scores = None
    if config.vote.rank_mode != 'votes':
      if any(c['score'] is None for c in stored):
        raise ValueError(
            f'task {task_id} test {n}: vote rank_mode {config.vote.rank_mode!r} '
            'needs scores, and the prediction computed none '
            '(score_augmentations=0)'
        )
      scores = np.array([c['score'] for c in stored], np.float32)
    entry, info = vote_test_input(cands, config, scores)
    entries.append(entry)
    details.append({**info, **({'truth_nll': old['truth_nll']} if 'truth_nll' in old else {})})
  return {**record, 'attempts': entries, 'details': details}


def run_revote(
    selector: str, from_dir: str, output_dir: str, config: PredictConfig
) -> metrics.Score | None:
  """Votes every selected task again from from_dir/attempts.jsonl into output_dir (a new
  attempts.jsonl, submission, details and report); nothing is decoded."""
  tasks, _ = arc.load_tasks(selector)
  records = read_done(from_dir)
  missing = [t.id for t in tasks if t.id not in records]
  if missing:
    raise ValueError(
        f'{os.path.join(from_dir, ATTEMPTS_FILE)} has no record of tasks '
        f'{missing[:5]}{"..." if len(missing) > 5 else ""}; predict them first'
    )
  revoted = {t.id: revote_record(records[t.id], config) for t in tqdm(tasks, desc='revote')}
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, ATTEMPTS_FILE), 'w') as f:
    f.writelines(json.dumps(revoted[t.id]) + '\n' for t in tasks)
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
) -> dict[str, dict]:
  """Predicts every task not yet in output_dir/attempts.jsonl, appending as tasks finish;
  returns all records (old and new) by task id."""
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
  with (
      checkpoint.open_log(os.path.join(output_dir, ATTEMPTS_FILE)) as out,
      tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc='predict') as bar,
  ):
    for start in range(0, len(todo), config.tasks_per_group):
      group = todo[start : start + config.tasks_per_group]
      adapters = (
          load_adapters(adapters_dir, [t.id for t in group], model_config, adapter_subdir)
          if adapters_dir
          else None
      )
      per_task = [prompts.task_variants(t, config.prompts) for t in group]
      variants = [v for vs in per_task for v in vs]
      task_index = [t for t, vs in enumerate(per_task) for _ in vs]
      cands = (
          decode_variants(params, model_config, variants, task_index, adapters, config)
          if variants
          else []
      )
      for t, task in enumerate(group):
        lora = None if adapters is None else jax.tree.map(lambda x: x[t], adapters[0])
        mine = [c for c in cands if c.variant.task_id == task.id]
        record = predict_task(
            params,
            model_config,
            task,
            per_task[t],
            mine,
            lora,
            None if adapters is None else adapters[1],
            config,
        )
        out.write(json.dumps(record) + '\n')
        out.flush()
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
  with open(os.path.join(output_dir, 'details.json'), 'w') as f:
    json.dump(details, f)
  if not tasks or any(p.output is None for t in tasks for p in t.test):
    logging.info('Test outputs unknown: wrote the submission, no score.')
    return None
  solutions = {t.id: [p.output.tolist() for p in t.test] for t in tasks}
  result = metrics.score_submission(submission, solutions)
  metrics.write_report(os.path.join(output_dir, 'report'), result, details)
  return result


def run_predict(
    selector: str,
    output_dir: str,
    config: PredictConfig,
    *,
    checkpoint_dir: str = '',
    preset: str = 'tiny',
    init_seed: int = 0,
    adapters_dir: str = '',
    adapter_subdir: str = '',
    dtypes: dict | None = None,
) -> metrics.Score | None:
  """What launch/predict.py runs: load, predict (resumably), write submission and report."""
  tasks, _ = arc.load_tasks(selector)
  if not tasks:
    raise ValueError(f'{selector}: no tasks loaded')
  model_config, params = builtin.load_model(
      checkpoint_dir, preset=preset, init_seed=init_seed, **(dtypes or {})
  )
  if not adapters_dir:
    logging.info('No adapters_dir: predicting with the base model for every task.')
  records = predict_tasks(
      params, model_config, tasks, output_dir, config, adapters_dir, adapter_subdir
  )
  result = write_outputs(records, tasks, output_dir)
  if result is not None:
    logging.info('Score %.2f / %d (%.1f%%)', result.total, result.num_tasks, 100 * result.mean)
  return result


def run_from_config(c, output_dir: str, adapters_dir: str | None = None) -> metrics.Score | None:
  """run_predict for a configs/predict.py ConfigDict; `adapters_dir` overrides c.adapters_dir."""
  m = c.model
  return run_predict(
      c.selector,
      output_dir,
      config_from(c),
      checkpoint_dir=m.checkpoint_dir,
      preset=m.preset,
      init_seed=m.init_seed,
      adapter_subdir=c.adapter_subdir,
      adapters_dir=c.adapters_dir if adapters_dir is None else adapters_dir,
      dtypes=dict(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype, remat=m.remat),
  )
