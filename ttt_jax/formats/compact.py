"""Our compact format (ttt_jax/data/format.py) behind the Format interface."""

from __future__ import annotations

import numpy as np

from ttt_jax.data import format as fmt
from ttt_jax.formats.base import Format


class CompactFormat(Format):
  """One token per cell, NEWLINE per row, INPUT / OUTPUT / EOS markers; 16 tokens."""

  name = 'compact'
  vocab_size = fmt.VOCAB_SIZE
  pad_id = fmt.PAD
  stop_ids = (fmt.EOS,)

  def encode_task(self, pairs, test_input, test_output=None, loss='all_but_first'):
    return fmt.encode_task(pairs, test_input, test_output, loss)

  def answer_tokens(self, shape):
    return shape[0] * (shape[1] + 1) + 1

  def parse_answer(self, tokens_N):
    return fmt.decode_grid(np.asarray(tokens_N))

  def pair_tokens(self, x, y):
    return fmt.pair_length(x, y)

  def __repr__(self) -> str:
    return 'CompactFormat()'


COMPACT = CompactFormat()  # the default of every stage
