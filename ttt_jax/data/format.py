"""The compact token format: one token per cell, a row-end token, markers.

Vocabulary (docs/ARCHITECTURE.md): colour c is id c (0..9), then NEWLINE=10,
INPUT=11, OUTPUT=12, BOS=13, EOS=14, PAD=15. A task is one sequence

  BOS (INPUT rows(in) OUTPUT rows(out) EOS)* INPUT rows(test_in) OUTPUT rows(test_out) EOS

with rows(g) = each row's cells then NEWLINE. A prediction prompt stops after
the last OUTPUT. `loss_mask[s] = 1` marks token s as a target (the rows of a
chosen output and its closing EOS; never a marker before it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ttt_jax.data.task_types import MAX_SIDE, NUM_COLORS, Task

NEWLINE, INPUT, OUTPUT, BOS, EOS, PAD = 10, 11, 12, 13, 14, 15
VOCAB_SIZE = 16
TOKEN_NAMES = tuple(str(c) for c in range(NUM_COLORS)) + (
    'NEWLINE',
    'INPUT',
    'OUTPUT',
    'BOS',
    'EOS',
    'PAD',
)

# Which tokens are targets (the test output always is): 'all_but_first' the outputs of the
# demonstrations from the second on (the paper's default: the first has no demonstration
# before it to learn from), 'test_only' none of them, 'all_outputs' every one, 'inputs_too'
# every token: demonstration inputs and outputs, markers, the test input (the reference's
# `train_on_input`).
LOSS_MODES = ('test_only', 'all_outputs', 'all_but_first', 'inputs_too')
# The paper's names for its loss masks, accepted wherever a loss mode is.
LOSS_ALIASES = {
    'demonstration_loss': 'all_but_first',  # the paper's TTT default
    'no_demonstration_loss': 'test_only',  # the paper's "No Demonstration Loss" arm
}


def loss_mode(name: str) -> str:
  """The loss mode `name` stands for (a LOSS_MODES entry or a LOSS_ALIASES key);
  ValueError otherwise."""
  mode = LOSS_ALIASES.get(name, name)
  if mode not in LOSS_MODES:
    raise ValueError(f'loss={name!r}; expected one of {LOSS_MODES + tuple(LOSS_ALIASES)}')
  return mode


# The pretrained-vocabulary strings our tokens map to (Llama-3 defaults):
# digits and '\n' are themselves; the markers are single tokens of that vocab.
LLAMA3_TOKEN_STRINGS = tuple(str(c) for c in range(NUM_COLORS)) + (
    '\n',
    'I',
    'O',
    '<|begin_of_text|>',
    '<|eot_id|>',
    '<|end_of_text|>',
)


def round_up(n: int, multiple: int) -> int:
  """n rounded up to a multiple: padded lengths from a few buckets, so jit compiles few shapes."""
  return -(-n // multiple) * multiple


def bucket_length(n: int, multiple: int) -> int:
  """The smallest of multiple x (1, 2, 3, 4, 6, 8, 12, 16, 24, ...) that holds n: two
  sizes per octave, so a run compiles O(log n) shapes (each a few seconds on a CPU)
  whatever its spread of lengths, for padding under 1.5x the length above 2 multiples
  (linear multiples pad less but compile once per multiple)."""
  k = 1
  while k * multiple < n:
    k = k * 3 // 2 if k >= 2 and k & (k - 1) == 0 else (k * 4 // 3 if k > 2 else k + 1)
  return k * multiple


def pad_rows(
    rows: Sequence[np.ndarray],
    multiple: int,
    fill: int,
    max_len: int | None = None,
    round_to=round_up,
) -> np.ndarray:
  """int32 [N, S]: rows right-padded with `fill` to the longest rounded up by `round_to`
  (to a multiple, or `bucket_length`), the rounding capped at `max_len`, never below the
  longest row."""
  longest = max(len(r) for r in rows)
  length = round_to(longest, multiple)
  if max_len is not None:
    length = min(length, max(max_len, longest))
  out = np.full((len(rows), length), fill, np.int32)
  for b, row in enumerate(rows):
    out[b, : len(row)] = row
  return out


def grid_to_tokens(grid: np.ndarray) -> np.ndarray:
  """rows(grid): int32 [h * (w + 1)], each row's cells then NEWLINE."""
  grid = np.asarray(grid, np.int32)
  newline_col = np.full((grid.shape[0], 1), NEWLINE, np.int32)
  return np.concatenate([grid, newline_col], axis=1).reshape(-1)


def encode_task(
    train_pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    test_input: np.ndarray,
    test_output: np.ndarray | None = None,
    loss: str = 'all_but_first',
) -> tuple[np.ndarray, np.ndarray]:
  """A task -> (tokens int32 [S], loss_mask int32 [S]).

  Without test_output the result is a prediction prompt ending in OUTPUT.
  `train_pairs` holds (input, output) pairs (an `arc.Pair` unpacks as one).
  """
  loss = loss_mode(loss)
  pieces, masks = [np.array([BOS], np.int32)], [np.zeros(1, np.int32)]

  def add(tokens: np.ndarray, target: bool) -> None:
    pieces.append(tokens)
    masks.append(np.full(len(tokens), int(target), np.int32))

  inputs = loss == 'inputs_too'
  for i, (x, y) in enumerate(train_pairs):
    add(np.concatenate([[INPUT], grid_to_tokens(x), [OUTPUT]]).astype(np.int32), inputs)
    target = loss in ('all_outputs', 'inputs_too') or (loss == 'all_but_first' and i > 0)
    add(np.append(grid_to_tokens(y), EOS).astype(np.int32), target)
  add(np.concatenate([[INPUT], grid_to_tokens(test_input), [OUTPUT]]).astype(np.int32), inputs)
  if test_output is not None:
    add(np.append(grid_to_tokens(test_output), EOS).astype(np.int32), True)
  return np.concatenate(pieces), np.concatenate(masks)


def decode_grid(tokens: Sequence[int] | np.ndarray) -> np.ndarray | None:
  """rows(g) [EOS ...] -> g, or None when the tokens are not one valid grid.

  Anything after the first EOS (padding, a runaway generation) is ignored.
  Ragged rows, a missing final NEWLINE, non-colour tokens, an empty grid or
  a side over 30 give None; this never raises on token content.
  """
  tokens = np.asarray(tokens).reshape(-1)
  eos = np.flatnonzero(tokens == EOS)
  if eos.size:
    tokens = tokens[: eos[0]]
  if tokens.size == 0 or tokens[-1] != NEWLINE:
    return None
  ends = np.flatnonzero(tokens == NEWLINE)
  width = ends[0]
  height = len(ends)
  if not (1 <= width <= MAX_SIDE and height <= MAX_SIDE):
    return None
  # Valid iff the NEWLINEs fall exactly every width + 1 tokens.
  if not np.array_equal(ends, np.arange(1, height + 1) * (width + 1) - 1):
    return None
  grid = tokens.reshape(height, width + 1)[:, :width]
  if ((grid < 0) | (grid >= NUM_COLORS)).any():
    return None
  return grid.astype(np.int8)


def task_sequences(task: Task, loss: str = 'all_but_first') -> list[tuple[np.ndarray, np.ndarray]]:
  """One full sequence (demos + test pair) per solved test pair of a task."""
  return [
      encode_task(task.train, p.input, p.output, loss) for p in task.test if p.output is not None
  ]


def pair_length(x: np.ndarray, y: np.ndarray) -> int:
  """Tokens of one `INPUT rows(x) OUTPUT rows(y) EOS` block."""
  return x.shape[0] * (x.shape[1] + 1) + y.shape[0] * (y.shape[1] + 1) + 3


def task_length(task: Task) -> int:
  """Tokens of the task's longest full sequence: all demonstrations plus one test pair."""
  return max(
      1 + sum(pair_length(x, y) for x, y in task.train) + pair_length(p.input, p.output)
      for p in task.test
      if p.output is not None
  )


def shortest_tasks(tasks: Sequence[Task], n: int) -> list[str]:
  """Ids of the n solved tasks with the fewest tokens (task_length), ties broken by id."""
  solved = [t for t in tasks if any(p.output is not None for p in t.test)]
  return [t.id for t in sorted(solved, key=lambda t: (task_length(t), t.id))[:n]]


def pretrained_token_ids(
    tokenizer_json_path: str, strings: Sequence[str] = LLAMA3_TOKEN_STRINGS
) -> list[int]:
  """The pretrained vocabulary id of each of our 16 tokens, in our id order.

  `strings[i]` is the text of our token i; each must be exactly one token of
  the pretrained tokenizer (a special/added token or a plain vocab entry),
  and all must differ, so the shrunk embedding keeps one row per token:
  `shrink_vocab(config, params, pretrained_token_ids(path))`.
  """
  from tokenizers import Tokenizer

  if len(strings) != VOCAB_SIZE:
    raise ValueError(f'need {VOCAB_SIZE} token strings, got {len(strings)}')
  tokenizer = Tokenizer.from_file(tokenizer_json_path)
  ids = []
  for name, text in zip(TOKEN_NAMES, strings):
    token_id = tokenizer.token_to_id(text)
    if token_id is None:
      encoded = tokenizer.encode(text, add_special_tokens=False).ids
      if len(encoded) != 1:
        raise ValueError(
            f'{tokenizer_json_path}: token {name} = {text!r} '
            f'is {len(encoded)} tokens {encoded}, expected 1'
        )
      token_id = encoded[0]
    ids.append(token_id)
  if len(set(ids)) != len(ids):
    raise ValueError(f'{tokenizer_json_path}: token strings map to repeated ids {ids}')
  return ids
