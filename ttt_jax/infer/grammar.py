"""Shape-constrained decoding for the compact format: only well-formed grids come out.

The grammar: cells (colours 0..9) and NEWLINEs, every row as wide as the first,
EOS only at a row end after at least one row, at most 30 x 30. With a target
shape (h, w) (a shape hypothesis, infer/shapes.py) the row ends and EOS are
forced: NEWLINE exactly after w cells, EOS exactly after h rows. A target (0, 0)
means the grammar alone. The decoders (infer/decode.py) mask the logits of every
step with `allowed` and renormalise, so a candidate's log-probability is under
the constrained distribution.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from ttt_jax.data import format as fmt
from ttt_jax.data.arc import MAX_SIDE, NUM_COLORS


@dataclasses.dataclass(frozen=True)
class GridGrammar:
  """The token ids the grammar speaks (the compact format's)."""

  newline_id: int = fmt.NEWLINE
  eos_id: int = fmt.EOS
  num_colors: int = NUM_COLORS
  max_side: int = MAX_SIDE


@struct.dataclass
class GrammarState:
  """Per row: rows finished, cells in the current row, the width (0 until the first row
  ends), and the target shape (0: free)."""

  row: jax.Array
  col: jax.Array
  width: jax.Array
  target_h: jax.Array
  target_w: jax.Array

  @classmethod
  def start(cls, target_B2: jax.Array) -> GrammarState:
    target_B2 = jnp.asarray(target_B2, jnp.int32)
    zeros = jnp.zeros(target_B2.shape[:1], jnp.int32)
    return cls(zeros, zeros, zeros, target_B2[:, 0], target_B2[:, 1])

  def take(self, index) -> GrammarState:
    """The rows `index` (reordering / repeating rows, as DFS slots do)."""
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), self)


def allowed(g: GridGrammar, s: GrammarState, vocab_size: int) -> jax.Array:
  """bool [B, V]: the tokens that keep each row's output a well-formed grid."""
  max_w = jnp.where(s.target_w > 0, s.target_w, jnp.where(s.width > 0, s.width, g.max_side))
  max_h = jnp.where(s.target_h > 0, s.target_h, g.max_side)
  fixed_w = (s.target_w > 0) | (s.width > 0)
  in_grid = s.row < max_h
  cell = in_grid & (s.col < max_w)
  newline = in_grid & jnp.where(fixed_w, s.col == max_w, s.col >= 1)
  eos = (s.col == 0) & (s.row >= 1) & ((s.target_h == 0) | (s.row == s.target_h))
  token_V = jnp.arange(vocab_size)
  is_color = token_V[None, :] < g.num_colors
  return (
      (is_color & cell[:, None])
      | ((token_V == g.newline_id)[None, :] & newline[:, None])
      | ((token_V == g.eos_id)[None, :] & eos[:, None])
  )


def advance(g: GridGrammar, s: GrammarState, token_B: jax.Array) -> GrammarState:
  """The state after each row emitted `token_B`."""
  newline = token_B == g.newline_id
  cell = token_B < g.num_colors
  return s.replace(
      row=s.row + newline,
      col=jnp.where(newline, 0, s.col + cell),
      width=jnp.where(newline & (s.width == 0), s.col, s.width),
  )


def constrain(logits_BV: jax.Array, allowed_BV: jax.Array) -> jax.Array:
  """Disallowed tokens get -inf; a row with nothing allowed keeps its logits (never NaN)."""
  any_B = jnp.any(allowed_BV, axis=-1, keepdims=True)
  return jnp.where(allowed_BV | ~any_B, logits_BV, -jnp.inf)
