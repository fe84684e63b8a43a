"""Prompt variants -> candidate answers: batched decoding, tokens parsed back to grids.

Rows are sorted by prompt length (less padding) and decoded in fixed-shape
batches; with adapters, each batch holds one task's rows only, so the call
runs that task's adapter on the whole batch (1.7x faster than gathering an
adapter per row). Each row has its own answer budget and, when sampling, its
own key, so a candidate depends on its task and variant alone, never on the
rows it was batched with. A malformed output is an invalid candidate (grid
None), never an error.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT
from ttt_jax.infer import decode, prompts, shapes
from ttt_jax.infer import grammar as grammar_lib
from ttt_jax.infer.predict_config import PredictConfig
from ttt_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One answer for a test input, in the frame of the prompt variant that produced it
  (voting inverts (d8, colors)); grid None when the output was malformed."""

  task_id: str
  test_index: int
  d8: int
  colors: tuple[int, ...]
  grid: np.ndarray | None
  logprob: float

  @classmethod
  def of(
      cls, variant: prompts.Variant, tokens_N: np.ndarray, logprob: float, fmt: Format
  ) -> Candidate:
    grid = fmt.parse_answer(tokens_N)
    return cls(variant.task_id, variant.test_index, variant.d8, variant.colors, grid, logprob)

  def to_json(self, score: float | None) -> dict:
    """As attempts.jsonl stores it, for re-voting without decoding."""
    return {
        'd8': int(self.d8),
        'colors': [int(x) for x in self.colors],
        'grid': None if self.grid is None else self.grid.tolist(),
        'logprob': self.logprob,
        'score': score,
    }

  @classmethod
  def from_json(cls, task_id: str, test_index: int, stored: dict) -> Candidate:
    grid = None if stored['grid'] is None else np.asarray(stored['grid'], np.int32)
    colors = tuple(stored['colors'])
    return cls(task_id, test_index, stored['d8'], colors, grid, stored['logprob'])


def row_key(seed: int, task_id: str, ordinal: int) -> jax.Array:
  """The sampling key of a task's `ordinal`-th variant: a function of the task, never of
  the batch, group or task selection it is decoded in."""
  key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(task_id.encode()) & 0x7FFFFFFF)
  return jax.random.fold_in(key, ordinal)


def _ordinals(variants: Sequence[prompts.Variant]) -> list[int]:
  """Each variant's index among its own task's variants."""
  ordinals, seen = [], {}
  for v in variants:
    ordinals.append(seen.get(v.task_id, 0))
    seen[v.task_id] = ordinals[-1] + 1
  return ordinals


@dataclasses.dataclass(frozen=True)
class _Row:
  """One decoded row: a variant under one shape target ((0, 0): the grammar alone)."""

  variant: int
  target: tuple[int, int] | None  # None: free decoding
  budget: int
  key: int  # the row's sampling ordinal within its task


def shape_mode(config: PredictConfig, fmt: Format) -> str:
  """config.shapes with 'auto' resolved for the format."""
  if config.shapes == 'auto':
    return 'hypotheses' if fmt.name == 'compact' else 'none'
  return config.shapes


def _rows(variants, ordinals, config: PredictConfig, fmt: Format) -> list[_Row]:
  mode = shape_mode(config, fmt)
  if mode != 'none' and fmt.name != 'compact':
    raise ValueError(
        f'PredictConfig.shapes={config.shapes!r} constrains compact grids; format '
        f'{fmt.name!r} needs shapes=none'
    )
  rows = []
  for i, v in enumerate(variants):
    targets = {'hypotheses': v.shapes or ((0, 0),), 'grammar': ((0, 0),), 'none': (None,)}[mode]
    for j, target in enumerate(targets):
      budget = v.answer_budget if not target or target == (0, 0) else fmt.answer_tokens(target)
      key = ordinals[i] * shapes.MAX_HYPOTHESES + j
      rows.append(_Row(i, target, min(config.max_new_tokens, budget), key))
  return rows


def _batches(rows, variants, task_index, by_task: bool, batch_size: int) -> list[list[int]]:
  """Row indices per decode call: sorted by prompt length, within each task when `by_task`
  (a batch then never mixes tasks: one shared adapter per call)."""
  length = lambda r: len(variants[rows[r].variant].tokens)
  groups = {}
  for r in range(len(rows)):
    groups.setdefault(task_index[rows[r].variant] if by_task else 0, []).append(r)
  batches = []
  for group in groups.values():
    group.sort(key=length)
    batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
  return batches


def decode_variants(
    params: dict,
    model_config: ModelConfig,
    variants: Sequence[prompts.Variant],
    task_index: Sequence[int],
    adapters: decode.Adapters | None,
    config: PredictConfig,
    fmt: Format = COMPACT,
) -> list[Candidate]:
  """Candidates of every variant (one per shape hypothesis, or every DFS completion),
  decoded and parsed in `fmt`; `task_index[i]` is variant i's task in `adapters`."""
  rows = _rows(variants, _ordinals(variants), config, fmt)
  grammar = None if shape_mode(config, fmt) == 'none' else grammar_lib.GridGrammar()
  candidates: dict[int, list[Candidate]] = {}
  model_of = None  # the task task_params / task_adapter run
  for names in _batches(rows, variants, task_index, adapters is not None, config.batch_size):
    batch = [rows[r] for r in names]
    padded = batch + [batch[-1]] * (config.batch_size - len(batch))
    prompts_ = [variants[r.variant].tokens for r in padded]
    tokens, lengths = decode.pad_prompts(
        prompts_, config.batch_size, config.length_multiple, fmt.pad_id
    )
    budget_B = np.array([r.budget for r in padded], np.int32)
    # A variant's shape hypotheses (and the padding rows) share its prompt: prefill it once.
    first = {}
    source_B = np.array([first.setdefault(r.variant, b) for b, r in enumerate(padded)], np.int32)
    task = task_index[batch[0].variant]
    if task != model_of:  # a task's batches come together: one merged copy alive at a time
      task_params = task_adapter = None  # dropped before the next task's merge
      task_params, task_adapter = decode.task_model(params, adapters, task, config.merge_adapters)
      model_of = task
    common = dict(
        adapters=task_adapter,
        max_new_B=budget_B,  # each row stops at its own budget: the loop exits when all have
        max_new_tokens=config.max_new_tokens,  # one static bound: one compile per prompt size
        stop_ids=fmt.stop_ids,
        pad_id=fmt.pad_id,
        grammar=grammar,
        target_shape_B2=None if grammar is None else np.array([r.target for r in padded], np.int32),
        prompt_source_B=source_B,
    )
    if config.decoding == 'dfs':
      out = decode.dfs(
          task_params, model_config, tokens, lengths, threshold=config.dfs_threshold, **common
      )
      seqs, logps, found = (np.asarray(x) for x in out)
      for b, (name, r) in enumerate(zip(names, batch)):
        candidates[name] = [
            Candidate.of(variants[r.variant], seqs[b, k], float(logps[b, k]), fmt)
            for k in np.flatnonzero(found[b])
        ]
    else:
      sampler = (
          decode.Greedy() if config.decoding == 'greedy' else decode.Sampling(config.temperature)
      )
      rng_B = jnp.stack([row_key(config.seed, variants[r.variant].task_id, r.key) for r in padded])
      out = decode.generate(
          task_params, model_config, tokens, lengths, sampler=sampler, rng_B=rng_B, **common
      )
      seqs, logps = np.asarray(out.tokens_BN), np.asarray(out.logprob_B)
      for b, (name, r) in enumerate(zip(names, batch)):
        candidates[name] = [Candidate.of(variants[r.variant], seqs[b], float(logps[b]), fmt)]
  return [c for r in range(len(rows)) for c in candidates[r]]
