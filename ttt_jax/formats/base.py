"""The interface every token format implements (the formats: compact.py, text.py; which
one a name means: load.py)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from ttt_jax.data.arc import Pair


class Format(abc.ABC):
  """Encodes tasks to (tokens, loss_mask) and parses generated answers back to grids.

  `loss_mask[s] = 1` marks token s as a target (predicted from tokens < s). The
  loss modes (data/format.py LOSS_MODES, or the paper's names in LOSS_ALIASES) say which
  tokens are targets besides the test output: 'test_only', 'all_outputs', 'all_but_first'
  (the paper's), 'inputs_too' (every token).
  """

  name: str
  vocab_size: int  # rows of the model's embedding this format needs
  pad_id: int  # fills sequences past their end (never a target)
  stop_ids: tuple[int, ...]  # decoding stops at the first of these

  @abc.abstractmethod
  def encode_task(
      self,
      pairs: Sequence[Pair | tuple[np.ndarray, np.ndarray]],
      test_input: np.ndarray,
      test_output: np.ndarray | None = None,
      loss: str = 'all_but_first',
  ) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32 [S], loss_mask int32 [S]) of the demonstrations and the test pair;
    without `test_output`, the prediction prompt (it ends where the answer starts)."""

  @abc.abstractmethod
  def answer_tokens(self, shape: tuple[int, int]) -> int:
    """At most how many tokens an answer grid of this shape takes, its stop token included."""

  @abc.abstractmethod
  def parse_answer(self, tokens_N: np.ndarray) -> np.ndarray | None:
    """Generated tokens (anything after the first stop id ignored) -> grid int8, or None
    when they are not one well-formed grid; never raises."""

  @abc.abstractmethod
  def pair_tokens(self, x: np.ndarray, y: np.ndarray) -> int:
    """Tokens one demonstration adds to a task (for fitting tasks into a length)."""

  def task_tokens(self, pairs: Sequence[Pair], test: Pair) -> int:
    """Tokens of the whole sequence with `test` as the test pair (exact: encoded)."""
    return len(self.encode_task(pairs, test.input, test.output)[0])
