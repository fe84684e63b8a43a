"""Batched decoding with the KV cache: greedy, temperature sampling, depth-first search.

Rows are (task x augmentation x prompt variant) prompts, right-padded. Each row
may use its own task's adapter: `Adapters` holds the stacked `[T, ...]` LoRA
tree and a per-row task index; the row's adapter is gathered with `jnp.take`
over the task axis and the model runs under `vmap` over rows, so the LoRA
matmuls are per row while the frozen base weights are shared.

Samplers are tiny frozen dataclasses with `get_next_tokens(logits, rng)`
(gemma's sampler style); the decoding state is a `flax.struct.dataclass`
advanced by `lax.while_loop`.

Every row is a function of its own prompt, adapter, budget and key alone:
row b stops at a stop token or after its own `max_new_B[b]` tokens (the loop's static
`max_new_tokens` only bounds the buffers), and a sampled row draws step n's
token with `fold_in(rng_B[b], n)`. So a row's tokens do not depend on which
rows share its batch, their lengths, or the batch's padded length; its
log-probabilities only up to float rounding.

`dfs` returns every completion whose probability stays above a threshold p
(the ARChitects' depth-first sampling), done as a batched expansion: the live
prefixes and finished sequences above p are disjoint events, so there are at
most floor(1/p) of them per row, and each step keeps exactly those.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ttt_jax.data import format as fmt
from ttt_jax.data.arc import MAX_SIDE
from ttt_jax.formats import positions as grid_positions
from ttt_jax.infer import grammar as grammar_lib
from ttt_jax.model import kv_cache
from ttt_jax.model import lora as lora_lib
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig

MAX_GRID_TOKENS = MAX_SIDE * (MAX_SIDE + 1) + 1  # 30 rows of 30 cells + NEWLINE, then EOS


# ------------------------------------------------------------------- samplers


@dataclasses.dataclass(frozen=True)
class Greedy:
  """The most likely token."""

  def get_next_tokens(self, logits_BV: jax.Array, rng_B: jax.Array) -> jax.Array:
    del rng_B
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """A draw from softmax(logits / temperature), restricted to the nucleus when top_p < 1:
  the most likely tokens whose probabilities (after the temperature, as vLLM applies
  them) first sum to >= top_p, renormalised. Tokens tied with the least likely member
  are kept too."""

  temperature: float = 1.0
  top_p: float = 1.0

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f'Sampling.temperature must be > 0, got {self.temperature}')
    if not 0 < self.top_p <= 1:
      raise ValueError(f'Sampling.top_p must be in (0, 1], got {self.top_p}')

  def get_next_tokens(self, logits_BV: jax.Array, rng_B: jax.Array) -> jax.Array:
    """One draw per row, each with its own key [B]."""
    logits_BV = logits_BV.astype(jnp.float32) / self.temperature
    if self.top_p < 1:
      logits_BV = jax.vmap(functools.partial(nucleus, top_p=self.top_p))(logits_BV)
    return jax.vmap(jax.random.categorical)(rng_B, logits_BV).astype(jnp.int32)


def nucleus(logits_V: jax.Array, top_p: float) -> jax.Array:
  """`logits_V` with every token outside the top-p nucleus at -inf."""
  probs_V = jax.nn.softmax(logits_V)
  descending_V = jnp.sort(probs_V)[::-1]
  # The first rank at which the mass reaches top_p holds the smallest kept probability.
  last = jnp.searchsorted(jnp.cumsum(descending_V), top_p)
  smallest = descending_V[jnp.minimum(last, probs_V.shape[0] - 1)]
  return jnp.where(probs_V >= smallest, logits_V, -jnp.inf)


# ---------------------------------------------------------- per-row adapters


@struct.dataclass
class Adapters:
  """Stacked adapters `{'q': {'a': [T, L, D, r], ...}}` of T tasks and each row's task
  index [B] (which adapter a decoded row uses); or, made by `shared`, one adapter
  `{'q': {'a': [L, D, r], ...}}` that every row uses (task_index_B None: no gather, no
  vmap over rows)."""

  lora: dict
  task_index_B: jax.Array | None
  config: LoraConfig = struct.field(pytree_node=False)

  @classmethod
  def shared(cls, tree: dict, config: LoraConfig) -> Adapters:
    """One adapter for every row (rows grouped by task)."""
    return cls(tree, None, config)

  @classmethod
  def stack(cls, trees: list[dict], config: LoraConfig) -> Adapters:
    """T tasks' adapters on a task axis; row t uses task t (`of_task`: one for all rows)."""
    lora = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *trees)
    return cls(lora, jnp.arange(len(trees), dtype=jnp.int32), config)

  def of_task(self, t: int) -> Adapters:
    """Task t's adapter shared by every row (a batch of that task's rows alone)."""
    if self.task_index_B is None:
      return self
    return Adapters.shared(jax.tree.map(lambda x: x[t], self.lora), self.config)

  def repeat_rows(self, k: int) -> Adapters:
    """The same adapters for rows repeated k times each (row b -> rows b*k .. b*k+k-1)."""
    if self.task_index_B is None:
      return self
    return self.replace(task_index_B=jnp.repeat(self.task_index_B, k))

  def model_kwargs(self, t: int = 0) -> dict:
    """`lora=` / `lora_config=` of task t, for a model call of that task alone."""
    return {'lora': self.of_task(t).lora, 'lora_config': self.config}

  def merged_into(self, params: dict, t: int = 0) -> dict:
    """`params` with task t's adapter folded in (W + scale a b): a model call of that task
    alone then runs no LoRA matmuls. Zeros (B = 0) give back the base weights exactly."""
    return _merge_lora(params, self.of_task(t).lora, self.config)


_merge_lora = jax.jit(lora_lib.merge_lora, static_argnames='lora_config')


def task_model(
    params: dict, adapters: Adapters | None, t: int, merge: bool
) -> tuple[dict, Adapters | None]:
  """(params, adapter) that run task t of `adapters` alone: its adapter merged into the
  weights (adapter None), or shared by every row; the base model without adapters."""
  if adapters is None:
    return params, None
  if merge:
    return adapters.merged_into(params, t), None
  return params, adapters.of_task(t)


def _run(step_fn, params, config, adapters: Adapters | None, cache: dict, *row_args):
  """step_fn(params, config, *row_args, cache, lora=, lora_config=) over all rows.

  Without adapters (or one shared adapter) the model runs on the batch as is;
  with per-row adapters each row runs alone under vmap with its gathered adapter.
  """
  if adapters is None:
    return step_fn(params, config, *row_args, cache)
  if adapters.task_index_B is None:
    return step_fn(params, config, *row_args, cache, **adapters.model_kwargs())
  # A [B, ...] copy of the adapters: fine for small adapters; for large ones group rows by
  # task instead (one shared adapter per call, no vmap).
  lora_B = jax.tree.map(lambda x: jnp.take(x, adapters.task_index_B, axis=0), adapters.lora)

  def one_row(k, v, end, lora_row, *args):
    row_cache = {'k': k[:, None], 'v': v[:, None], 'end': end[None]}
    logits_1V, row_cache = step_fn(
        params,
        config,
        *(a[None] for a in args),
        row_cache,
        lora=lora_row,
        lora_config=adapters.config,
    )
    return logits_1V[0], row_cache['k'][:, 0], row_cache['v'][:, 0], row_cache['end'][0]

  in_axes = (1, 1, 0, 0) + (0,) * len(row_args)
  logits_BV, k, v, end = jax.vmap(one_row, in_axes=in_axes, out_axes=(0, 1, 1, 0))(
      cache['k'], cache['v'], cache['end'], lora_B, *row_args
  )
  return logits_BV, {'k': k, 'v': v, 'end': end}


def _prefill_rows(params, config, tokens_BS, lengths_B, positions_BS, cache, source_B=None, **lora):
  return kv_cache.prefill(
      params,
      config,
      tokens_BS,
      lengths_B,
      cache,
      positions_BS=positions_BS,
      source_B=source_B,
      **lora,
  )


def _decode_rows(params, config, tokens_B, positions_B, cache, **lora):
  return kv_cache.decode_step(params, config, tokens_B, cache, positions_B=positions_B, **lora)


def _prefill(params, config, adapters, tokens_BS, lengths_B, source_B, max_new_tokens):
  """(logits [B, V] after each prompt, a cache holding the prompts with room for
  `max_new_tokens` more, the next token's position [B]); rows sharing a prompt
  (`source_B`) prefill it once."""
  positions_BS, next_B = _prompt_positions(config, tokens_BS, lengths_B)
  B, S = tokens_BS.shape
  cache = kv_cache.init_cache(config, B, S + max_new_tokens)
  if adapters is not None and adapters.task_index_B is not None:
    source_B = None  # per-row adapters: each row runs alone
  step_fn = functools.partial(_prefill_rows, source_B=source_B)
  logits_BV, cache = _run(
      step_fn, params, config, adapters, cache, tokens_BS, lengths_B, positions_BS
  )
  return logits_BV, cache, next_B


def _decode_step(params, config, adapters, tokens_B, positions_B, cache):
  return _run(_decode_rows, params, config, adapters, cache, tokens_B, positions_B)


def _prompt_positions(config, tokens_BS, lengths_B):
  """The prompts' position ids under `config.positions`, and the next token's (position,
  row start): one after each prompt's last."""
  positions_BS = grid_positions.position_ids(tokens_BS, config)
  if positions_BS is None:
    S = tokens_BS.shape[1]
    positions_BS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), lengths_B.shape + (S,))
  last_B = jnp.take_along_axis(positions_BS, (lengths_B - 1)[:, None], axis=1)[:, 0]
  return positions_BS, last_B + 1


def _step_position(config, token_B, position_B, row_start_B):
  position_rule = grid_positions.rule(config)
  if position_rule is None:
    return position_B + 1, row_start_B
  return grid_positions.next_position(position_rule, token_B, position_B, row_start_B)


# ------------------------------------------------------------ greedy / sampling


class Decoded(NamedTuple):
  """New tokens [B, N] (pad_id after the stop), their count [B] (the stop included), and the sum of
  their log-probabilities [B] under the model (float32, temperature 1)."""

  tokens_BN: jax.Array
  lengths_B: jax.Array
  logprob_B: jax.Array


@struct.dataclass
class _SamplingState:
  step: jax.Array
  tokens_BN: jax.Array
  done_B: jax.Array
  lengths_B: jax.Array
  logprob_B: jax.Array
  logits_BV: jax.Array
  position_B: jax.Array  # of the token to be fed next
  row_start_B: jax.Array  # grid positions: where the current row started
  grammar: grammar_lib.GrammarState | None
  cache: dict


def _is_stop(token_B: jax.Array, stop_ids: tuple[int, ...]) -> jax.Array:
  return jnp.isin(token_B, jnp.asarray(stop_ids, jnp.int32))


def row_budgets(max_new_B: jax.Array | None, batch: int, max_new_tokens: int) -> jax.Array:
  """Each row's own token budget [B] (default: `max_new_tokens`), capped by it."""
  if max_new_B is None:
    return jnp.full((batch,), max_new_tokens, jnp.int32)
  return jnp.minimum(jnp.asarray(max_new_B, jnp.int32), max_new_tokens)


def row_keys(rng_B: jax.Array | None, batch: int) -> jax.Array:
  """Each row's own random key [B] (default: row b gets fold_in(key(0), b))."""
  if rng_B is None:
    return jax.vmap(lambda b: jax.random.fold_in(jax.random.key(0), b))(jnp.arange(batch))
  return rng_B


def _masked(grammar, state, logits_BV):
  """Logits under the grid grammar (unchanged without one)."""
  if grammar is None:
    return logits_BV
  allowed_BV = grammar_lib.allowed(grammar, state, logits_BV.shape[-1])
  return grammar_lib.constrain(logits_BV, allowed_BV)


def _grammar_start(grammar, target_shape_B2, batch: int):
  if grammar is None:
    return None
  if target_shape_B2 is None:
    target_shape_B2 = jnp.zeros((batch, 2), jnp.int32)
  return grammar_lib.GrammarState.start(target_shape_B2)


@functools.partial(
    jax.jit,
    static_argnames=(
        'config', 'sampler', 'max_new_tokens', 'stop_ids', 'pad_id', 'grammar'
    ),
)  # fmt: skip
def generate(
    params: dict,
    config: ModelConfig,
    prompt_tokens_BS: jax.Array,
    prompt_lengths_B: jax.Array,
    *,
    sampler=Greedy(),
    rng_B: jax.Array | None = None,
    adapters: Adapters | None = None,
    max_new_B: jax.Array | None = None,
    max_new_tokens: int = MAX_GRID_TOKENS,
    stop_ids: tuple[int, ...] = (fmt.EOS,),
    pad_id: int = fmt.PAD,
    grammar: grammar_lib.GridGrammar | None = None,
    target_shape_B2: jax.Array | None = None,
    prompt_source_B: jax.Array | None = None,
) -> Decoded:
  """Continues right-padded prompts (row b real for its first lengths[b] tokens) until row b
  emits one of `stop_ids` or its `max_new_B[b]` tokens (<= `max_new_tokens`); stops early
  once every row is done. `rng_B` [B]: each row's key (sampling only). Position ids follow
  `config.positions`. With a `grammar`, only well-formed grids (of `target_shape_B2`
  [B, 2] where non-zero) are generated. `prompt_source_B` [B]: row b's prompt is row
  source[b]'s (source[source[b]] == source[b]): it is prefilled once (kv_cache.prefill)."""
  B = prompt_tokens_BS.shape[0]
  budget_B = row_budgets(max_new_B, B, max_new_tokens)
  rng_B = row_keys(rng_B, B)
  prompt = (prompt_tokens_BS, prompt_lengths_B, prompt_source_B)
  logits_BV, cache, next_B = _prefill(params, config, adapters, *prompt, max_new_tokens)

  def running(s: _SamplingState):
    return (s.step < max_new_tokens) & ~jnp.all(s.done_B)

  def advance(s: _SamplingState) -> _SamplingState:
    step_rng_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng_B, s.step)
    logits_BV = _masked(grammar, s.grammar, s.logits_BV)
    token_B = sampler.get_next_tokens(logits_BV, step_rng_B)
    token_B = jnp.where(s.done_B, pad_id, token_B)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BV), token_B[:, None], axis=1)[:, 0]
    live_B = ~s.done_B
    lengths_B = s.lengths_B + live_B
    # Finished rows feed a stop token (any in-vocabulary id would do); their output shows pad_id.
    fed_B = jnp.where(live_B, token_B, stop_ids[0])
    next_logits_BV, cache = _decode_step(params, config, adapters, fed_B, s.position_B, s.cache)
    position_B, row_start_B = _step_position(config, fed_B, s.position_B, s.row_start_B)
    return _SamplingState(
        step=s.step + 1,
        tokens_BN=jax.lax.dynamic_update_index_in_dim(s.tokens_BN, token_B, s.step, axis=1),
        done_B=s.done_B | _is_stop(token_B, stop_ids) | (lengths_B >= budget_B),
        lengths_B=lengths_B,
        logprob_B=s.logprob_B + jnp.where(live_B, logp_B, 0.0),
        logits_BV=next_logits_BV,
        position_B=position_B,
        row_start_B=row_start_B,
        grammar=None if grammar is None else grammar_lib.advance(grammar, s.grammar, token_B),
        cache=cache,
    )

  state = _SamplingState(
      step=jnp.int32(0),
      tokens_BN=jnp.full((B, max_new_tokens), pad_id, jnp.int32),
      done_B=budget_B <= 0,
      lengths_B=jnp.zeros((B,), jnp.int32),
      logprob_B=jnp.zeros((B,), jnp.float32),
      logits_BV=logits_BV,
      position_B=next_B,
      row_start_B=next_B,
      grammar=_grammar_start(grammar, target_shape_B2, B),
      cache=cache,
  )
  state = jax.lax.while_loop(running, advance, state)
  return Decoded(state.tokens_BN, state.lengths_B, state.logprob_B)


# ------------------------------------------------------------ depth-first search


def dfs_capacity(threshold: float) -> int:
  """At most floor(1/p) disjoint completions can each have probability >= p."""
  if not 0 < threshold <= 1:
    raise ValueError(f'DFS threshold must be in (0, 1], got {threshold}')
  return max(1, math.floor(1 / threshold + 1e-9))


class Searched(NamedTuple):
  """Per row, K = dfs_capacity(p) slots, best first: tokens [B, K, N] (pad_id after the stop),
  log-probs [B, K], and `found` [B, K]: the slot holds a completion ending in a stop token whose
  probability is >= p (the other slots are empty or ran out of tokens)."""

  tokens_BKN: jax.Array
  logprob_BK: jax.Array
  found_BK: jax.Array


@struct.dataclass
class _SearchState:
  step: jax.Array
  tokens_BKN: jax.Array
  logprob_BK: jax.Array
  live_BK: jax.Array  # a prefix still being expanded
  finished_BK: jax.Array  # a completion that ended in a stop token
  logits_BKV: jax.Array
  position_R: jax.Array  # R = B * K slot rows: the position of the token fed next
  row_start_R: jax.Array
  grammar: grammar_lib.GrammarState | None  # per slot row
  cache: dict


@functools.partial(
    jax.jit,
    static_argnames=(
        'config', 'threshold', 'max_new_tokens', 'stop_ids', 'pad_id', 'grammar'
    ),
)  # fmt: skip
def dfs(
    params: dict,
    config: ModelConfig,
    prompt_tokens_BS: jax.Array,
    prompt_lengths_B: jax.Array,
    *,
    threshold: float,
    adapters: Adapters | None = None,
    max_new_B: jax.Array | None = None,
    max_new_tokens: int = MAX_GRID_TOKENS,
    stop_ids: tuple[int, ...] = (fmt.EOS,),
    pad_id: int = fmt.PAD,
    grammar: grammar_lib.GridGrammar | None = None,
    target_shape_B2: jax.Array | None = None,
    prompt_source_B: jax.Array | None = None,
) -> Searched:
  """Every completion whose probability is >= `threshold` and whose length is within its
  row's budget `max_new_B[b]` (<= `max_new_tokens`), with its log-prob. Positions and the
  grammar and `prompt_source_B` as in `generate` (probabilities then under the constrained
  distribution).

  A prefix is expanded only while its cumulative probability stays >= p, so
  this is exactly the set depth-first search finds; it is computed breadth
  first, K = floor(1/p) slots per row, each slot with its own cache row. Ties
  are broken by slot and token index (`lax.top_k`), so the result is
  deterministic.
  """
  B = prompt_tokens_BS.shape[0]
  K = dfs_capacity(threshold)
  V = config.vocab_size
  min_logp = jnp.float32(math.log(threshold))
  budget_B = row_budgets(max_new_B, B, max_new_tokens)
  prompt = (prompt_tokens_BS, prompt_lengths_B, prompt_source_B)
  logits_BV, cache, next_B = _prefill(params, config, adapters, *prompt, max_new_tokens)
  # Every slot starts from the prompt: copy its cache row K times.
  cache = {
      'k': jnp.repeat(cache['k'], K, axis=1),
      'v': jnp.repeat(cache['v'], K, axis=1),
      'end': jnp.repeat(cache['end'], K),
  }
  slot_adapters = None if adapters is None else adapters.repeat_rows(K)
  first_K = jnp.arange(K) == 0

  def expandable(s: _SearchState) -> jax.Array:
    """Live prefixes [B, K] of rows still within their budget."""
    return s.live_BK & (s.step < budget_B)[:, None]

  def running(s: _SearchState):
    return (s.step < max_new_tokens) & jnp.any(expandable(s))

  def advance(s: _SearchState) -> _SearchState:
    # Candidates per row: K "keep" entries (finished slots stay) + K*V expansions.
    logits_BKV = _masked(grammar, s.grammar, s.logits_BKV.reshape(B * K, V)).reshape(B, K, V)
    expand_BKV = s.logprob_BK[..., None] + jax.nn.log_softmax(logits_BKV, axis=-1)
    expand_BKV = jnp.where(
        expandable(s)[..., None] & (expand_BKV >= min_logp), expand_BKV, -jnp.inf
    )
    keep_BK = jnp.where(s.finished_BK, s.logprob_BK, -jnp.inf)
    scores_BC = jnp.concatenate([keep_BK, expand_BKV.reshape(B, K * V)], axis=1)
    best_BK, pick_BK = jax.lax.top_k(scores_BC, K)
    is_keep_BK = pick_BK < K
    parent_BK = jnp.where(is_keep_BK, pick_BK, (pick_BK - K) // V)
    token_BK = jnp.where(is_keep_BK, pad_id, (pick_BK - K) % V).astype(jnp.int32)
    filled_BK = best_BK > -jnp.inf
    token_BK = jnp.where(filled_BK, token_BK, pad_id)
    stopped_BK = _is_stop(token_BK, stop_ids)
    new_live_BK = filled_BK & ~is_keep_BK & ~stopped_BK
    new_finished_BK = filled_BK & (is_keep_BK | stopped_BK)

    tokens_BKN = jnp.take_along_axis(s.tokens_BKN, parent_BK[..., None], axis=1)
    tokens_BKN = jax.lax.dynamic_update_index_in_dim(tokens_BKN, token_BK, s.step, axis=2)
    # Each slot continues its parent's cache row.
    rows = (jnp.arange(B)[:, None] * K + parent_BK).reshape(-1)
    cache = {
        'k': jnp.take(s.cache['k'], rows, axis=1),
        'v': jnp.take(s.cache['v'], rows, axis=1),
        'end': jnp.take(s.cache['end'], rows),
    }
    fed_R = jnp.where(new_live_BK, token_BK, stop_ids[0]).reshape(-1)  # idle: a harmless stop
    position_R, row_start_R = jnp.take(s.position_R, rows), jnp.take(s.row_start_R, rows)
    logits, cache = _decode_step(params, config, slot_adapters, fed_R, position_R, cache)
    position_R, row_start_R = _step_position(config, fed_R, position_R, row_start_R)
    slot_grammar = None
    if grammar is not None:
      slot_grammar = grammar_lib.advance(grammar, s.grammar.take(rows), token_BK.reshape(-1))
    return _SearchState(
        step=s.step + 1,
        tokens_BKN=tokens_BKN,
        logprob_BK=jnp.where(filled_BK, best_BK, -jnp.inf),
        live_BK=new_live_BK,
        finished_BK=new_finished_BK,
        logits_BKV=logits.reshape(B, K, V),
        position_R=position_R,
        row_start_R=row_start_R,
        grammar=slot_grammar,
        cache=cache,
    )

  state = _SearchState(
      step=jnp.int32(0),
      tokens_BKN=jnp.full((B, K, max_new_tokens), pad_id, jnp.int32),
      logprob_BK=jnp.where(first_K, 0.0, -jnp.inf)[None].repeat(B, 0),
      live_BK=jnp.broadcast_to(first_K, (B, K)),
      finished_BK=jnp.zeros((B, K), bool),
      logits_BKV=jnp.repeat(logits_BV[:, None], K, axis=1),
      position_R=jnp.repeat(next_B, K),
      row_start_R=jnp.repeat(next_B, K),
      grammar=None
      if grammar is None
      else _grammar_start(grammar, target_shape_B2, B).take(jnp.repeat(jnp.arange(B), K)),
      cache=cache,
  )
  s = jax.lax.while_loop(running, advance, state)
  # Best first; slots that ran out of tokens or stayed empty go last.
  key_BK = jnp.where(s.finished_BK, s.logprob_BK, -jnp.inf)
  order_BK = jnp.argsort(-key_BK, axis=1, stable=True)
  take = lambda x: jnp.take_along_axis(
      x, order_BK.reshape(order_BK.shape + (1,) * (x.ndim - 2)), axis=1
  )
  return Searched(take(s.tokens_BKN), take(key_BK), take(s.finished_BK))


# ---------------------------------------------------------------- host helpers


def pad_prompts(
    prompts: list[np.ndarray],
    batch: int | None = None,
    length_multiple: int = 64,
    pad_id: int = fmt.PAD,
) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token lists to [batch, S] (S: format.bucket_length of the longest, so a few
  shapes cover all batches and jit compiles once per shape); missing rows repeat the last
  prompt."""
  if not prompts:
    raise ValueError('pad_prompts: no prompts')
  batch = len(prompts) if batch is None else batch
  if len(prompts) > batch:
    raise ValueError(f'pad_prompts: {len(prompts)} prompts exceed batch {batch}')
  rows = list(prompts) + [prompts[-1]] * (batch - len(prompts))
  tokens = fmt.pad_rows(rows, length_multiple, pad_id, round_to=fmt.bucket_length)
  return tokens, np.array([len(p) for p in rows], np.int32)
