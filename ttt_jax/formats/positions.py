"""Grid-aware position ids for the compact format (`positions='grid'`).

A cell's position is built from its grid coordinates: pair p starts at
1 + PAIR_STRIDE * p (its INPUT marker), the input grid's cell (r, c) is at
start + 1 + ROW_STRIDE * r + c, the OUTPUT marker at start + GRID_STRIDE and
the output's cell (r, c) at start + GRID_STRIDE + 1 + ROW_STRIDE * r + c. A row's
NEWLINE takes the slot after its last cell and EOS the first slot of the row
after the last. With plain RoPE, cells in the same column of adjacent rows are
ROW_STRIDE apart, and the same cell of a demonstration's input and output is
the same distance apart in every pair. The model stays a Hugging Face Llama
(`position_ids` take these numbers), but one trained with grid positions must
be run with them: the positions are part of the format, not of the weights.

`ModelConfig.positions` names the scheme of a model; `position_ids` gives a
batch's ids under it (training, scoring, prefill), and during decoding
`next_position` steps a (position, row start) state one token at a time.
Rows packed with several examples (TTT with `data.pack`) carry segment ids;
every example's positions then start afresh at its first token, as if alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ttt_jax.data import format as fmt

ROW_STRIDE = 32  # > 30 cells + NEWLINE
GRID_STRIDE = 1024  # > 30 rows
PAIR_STRIDE = 2 * GRID_STRIDE


@dataclasses.dataclass(frozen=True)
class GridRule:
  """How decoding advances positions: NEWLINE jumps to the next row's start."""

  newline_id: int = fmt.NEWLINE
  row_stride: int = ROW_STRIDE


def _cummax(x):
  return jax.lax.cummax(x, axis=x.ndim - 1)


def segment_starts(segments_BS) -> jax.Array:
  """int32 [..., S]: the slot where each token's segment (a packed example) begins."""
  segments_BS = jnp.asarray(segments_BS)
  s_S = jnp.arange(segments_BS.shape[-1])
  first = jnp.ones_like(segments_BS[..., :1], bool)
  begins = jnp.concatenate([first, segments_BS[..., 1:] != segments_BS[..., :-1]], axis=-1)
  return _cummax(jnp.where(begins, s_S, 0)).astype(jnp.int32)


def grid_positions(tokens_BS, segments_BS=None) -> jax.Array:
  """int32 [..., S]: the grid position of every token of compact sequences or prompts
  (BOS and padding at 0), each segment on its own when segment ids are given.
  Vectorized: runs under jit on a batch, or on one host array."""
  tokens_BS = jnp.asarray(tokens_BS)
  s_S = jnp.arange(tokens_BS.shape[-1])
  is_in, is_out = tokens_BS == fmt.INPUT, tokens_BS == fmt.OUTPUT
  is_nl = tokens_BS == fmt.NEWLINE
  take = lambda x, i: jnp.take_along_axis(x, jnp.maximum(i, 0), axis=-1)
  seg_start = jnp.zeros_like(tokens_BS) if segments_BS is None else segment_starts(segments_BS)
  inputs = jnp.cumsum(is_in, axis=-1)
  inputs = inputs - take(inputs - is_in, seg_start)  # INPUT markers of this segment so far
  start = 1 + PAIR_STRIDE * (inputs - 1)
  marker = _cummax(jnp.where(is_in | is_out, s_S, -1))  # the last INPUT / OUTPUT so far
  origin = start + jnp.where(take(is_out, marker), GRID_STRIDE, 0) + 1  # the grid's first cell
  newlines = jnp.cumsum(is_nl, axis=-1)
  row = newlines - is_nl - take(newlines, marker)  # rows finished before this token
  boundary = _cummax(jnp.where(is_in | is_out | is_nl, s_S, -1))  # inclusive of this token
  previous = jnp.concatenate([jnp.full_like(boundary[..., :1], -1), boundary[..., :-1]], -1)
  position = origin + ROW_STRIDE * row + (s_S - previous - 1)
  position = jnp.where(is_in, start, jnp.where(is_out, start + GRID_STRIDE, position))
  before_any = marker < seg_start  # no marker yet in this segment
  return jnp.where(before_any | (tokens_BS == fmt.PAD), 0, position).astype(jnp.int32)


def position_ids(tokens_BS, config, segments_BS=None) -> jax.Array | None:
  """The position ids a model with `config.positions` gives these tokens (None: the
  default 0, 1, 2, ... of llama.forward), restarting at every segment when given."""
  if config.positions == 'grid':
    return grid_positions(tokens_BS, segments_BS)
  if segments_BS is None:
    return None
  return jnp.arange(jnp.shape(segments_BS)[-1]) - segment_starts(segments_BS)


def rule(config) -> GridRule | None:
  """How decoding steps positions for this model (None: one by one)."""
  return GridRule() if config.positions == 'grid' else None


def next_position(rule: GridRule, token_B: jax.Array, position_B: jax.Array, row_start_B):
  """(position, row start) [B] of the token after `token_B`, which sat at `position_B`."""
  newline_B = token_B == rule.newline_id
  row_start_B = jnp.where(newline_B, row_start_B + rule.row_stride, row_start_B)
  return jnp.where(newline_B, row_start_B, position_B + 1), row_start_B
