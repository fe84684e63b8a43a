"""The reference code's two text formats (ekinakyurek/marc), rendered with the checkpoint's
tokenizer and chat template.

`marc` (`--new_format`: GPTTextMessageRepresenterV2 over TextTaskRepresenter /
TextExampleRepresenter with io_sep " -> ", output_footer "#" and
PythonListGridRepresenter): a system message with the instructions and every
demonstration as `<grid> -> <grid>#`, a user message `<test grid> -> `, the
answer `<grid>#` from the assistant. Grids are written as numpy prints them.

`barc` (`--barc_format`: GPTTextMessageRepresenterForBarc with
WordGridRepresenter, "Input:\\n" / "\\nOutput:\\n" headers): BARC's system prompt,
one user message with the numbered examples and the test input as colour words,
the answer inside a ``` block.

Loss masks follow the reference's torchtune fork: the assistant message, its
header and <|eot_id|> included, is always a target; 'all_but_first' also makes
targets of the demonstration outputs after the first (its `unmask_outputs`:
from the token after " ->" through the "#"), 'all_outputs' of all of them,
'inputs_too' of every token after the first (its `train_on_input`). A training
sequence ends with <|end_of_text|>, never a target.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np

from ttt_jax.data.arc import MAX_SIDE, NUM_COLORS
from ttt_jax.data.format import loss_mode
from ttt_jax.formats.base import Format
from ttt_jax.formats.chat import ChatTokenizer

END_OF_TEXT = '<|end_of_text|>'

# ---------------------------------------------------------------- grids as text

COLOR_WORDS = (
    'Black',
    'Blue',
    'Red',
    'Green',
    'Yellow',
    'Gray',
    'Pink',
    'Orange',
    'Purple',
    'Brown',
)
_WORD_COLORS = {w: c for c, w in enumerate(COLOR_WORDS)}


def numpy_text(grid: np.ndarray) -> str:
  """A grid as `str(np.array(grid))` prints it: '[[0 0 3]\\n [0 1 0]]' (PythonListGridRepresenter)."""
  rows = ['[' + ' '.join(str(int(c)) for c in row) + ']' for row in np.asarray(grid)]
  return '[' + '\n '.join(rows) + ']'


def word_text(grid: np.ndarray) -> str:
  """A grid as colour words, cells by spaces, rows by newlines (WordGridRepresenter)."""
  return '\n'.join(' '.join(COLOR_WORDS[int(c)] for c in row) for row in np.asarray(grid))


def _checked(rows: list[list[int]]) -> np.ndarray | None:
  """rows -> int8 grid when rectangular, 1..30 a side, colours 0..9; else None."""
  if not rows or not 1 <= len(rows) <= MAX_SIDE:
    return None
  width = len(rows[0])
  if not 1 <= width <= MAX_SIDE or any(len(r) != width for r in rows):
    return None
  grid = np.asarray(rows)
  if ((grid < 0) | (grid >= NUM_COLORS)).any():
    return None
  return grid.astype(np.int8)


def parse_numpy_text(text: str) -> np.ndarray | None:
  """numpy_text -> grid (the reference first drops '#' and doubled spaces), or None.

  Stricter than the reference's parser, which reshapes any cell count divisible by
  the row count: a ragged answer is invalid here."""
  text = text.replace('#', '').replace('  ', ' ').strip()
  if not (text.startswith('[[') and text.endswith(']]')):
    return None
  rows = []
  for line in text[1:-1].split('\n'):
    line = line.strip()
    if not (line.startswith('[') and line.endswith(']')):
      return None
    cells = line[1:-1].split(' ')
    if not all(len(c) == 1 and c.isdigit() for c in cells):
      return None
    rows.append([int(c) for c in cells])
  return _checked(rows)


def parse_word_text(text: str) -> np.ndarray | None:
  """word_text -> grid (inside the first ``` block when there is one), or None."""
  if '```' in text:
    text = text.split('```')[1]
  lines = text.strip().split('\n')
  try:
    return _checked([[_WORD_COLORS[w] for w in line.split()] for line in lines])
  except KeyError:
    return None


# ---------------------------------------------------------------- messages

# Loss spans are (message index, start, end) character ranges of message contents.
Span = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Chat:
  """A task as chat messages; `targets` are the demonstration outputs (by demo index)."""

  messages: list[dict]
  demo_outputs: list[Span]


MARC_PROMPT = (
    'Figure out the underlying transformation in the following examples and apply it to the '
    'test case. Here are some examples from this transformation, your answer must follow the '
    'format.\nThe input-output grids are provided as python arrays:\n'
)


def marc_chat(pairs, test_input, test_output=None) -> Chat:
  """GPTTextMessageRepresenterV2.encode with the `--new_format` representers (predict.py,
  test_time_train.py); the description slot is empty (tasks carry none)."""
  system, outputs = MARC_PROMPT, []
  for x, y in pairs:
    system += numpy_text(x) + ' -> '
    outputs.append((0, len(system) - 1, len(system) + len(numpy_text(y)) + 1))  # ' [[...]]#'
    system += numpy_text(y) + '#\n'
  messages = [
      {'role': 'system', 'content': system},
      {'role': 'user', 'content': numpy_text(test_input) + ' -> '},
  ]
  if test_output is not None:
    messages.append({'role': 'assistant', 'content': numpy_text(test_output) + '#'})
  return Chat(messages, outputs)


BARC_SYSTEM = (
    'You are a world-class puzzle solver with exceptional pattern recognition skills. Your task '
    'is to analyze puzzles, spot patterns, and provide direct solutions.'
)
BARC_INTRO = (
    'Given input-output grid pairs as reference examples, carefully observe the patterns to '
    'predict the output grid for new test input. Each pair follows the same transformation '
    'rule. Grids are 2D arrays represented as strings, with cells (colors) separated by spaces '
    'and rows by newlines.\nHere are the input and output grids for the reference examples:\n'
)
BARC_TEST = '\n\nHere is the input grid for the test example:\n'
BARC_ASK = (
    'Directly provide the output grids corresponding to the given test input grids, based on '
    'the patterns observed in the reference examples.'
)
BARC_ANSWER = 'The output grid for the test input grid is:\n\n```\n{grid}\n```'


def barc_chat(pairs, test_input, test_output=None) -> Chat:
  """GPTTextMessageRepresenterForBarc.encode with the `--barc_format` representers; its
  default system prompt (Llama-3.1's chat template adds the date lines before it, which
  the reference's TTT wrote into the prompt by hand)."""
  user, outputs = BARC_INTRO, []
  for i, (x, y) in enumerate(pairs):
    user += f'Example {i + 1}:\nInput:\n{word_text(x)}\n\nOutput:\n'
    outputs.append((1, len(user), len(user) + len(word_text(y))))
    user += word_text(y) + '\n'
  user += BARC_TEST + f'Input:\n{word_text(test_input)}\n\n\n' + BARC_ASK
  messages = [{'role': 'system', 'content': BARC_SYSTEM}, {'role': 'user', 'content': user}]
  if test_output is not None:
    messages.append(
        {'role': 'assistant', 'content': BARC_ANSWER.format(grid=word_text(test_output))}
    )
  return Chat(messages, outputs)


@dataclasses.dataclass(frozen=True)
class _Spec:
  chat: Callable[..., Chat]
  answer_text: Callable[[np.ndarray], str]  # the assistant's content for a grid
  parse: Callable[[str], np.ndarray | None]
  demo_text: Callable[[np.ndarray, np.ndarray], str]  # what one demonstration adds


SPECS = {
    'marc': _Spec(
        marc_chat,
        lambda g: numpy_text(g) + '#',
        parse_numpy_text,
        lambda x, y: f'{numpy_text(x)} -> {numpy_text(y)}#\n',
    ),
    'barc': _Spec(
        barc_chat,
        lambda g: BARC_ANSWER.format(grid=word_text(g)),
        parse_word_text,
        lambda x, y: f'Example 1:\nInput:\n{word_text(x)}\n\nOutput:\n{word_text(y)}\n',
    ),
}


# ---------------------------------------------------------------- the format


def _content_starts(text: str, messages: Sequence[dict]) -> list[int]:
  """Where each message's raw content would start in the rendered text (the template
  trims contents: a stripped prefix is accounted for)."""
  starts, position = [], 0
  for m in messages:
    content = m['content']
    trimmed = content.strip()
    at = text.index(trimmed, position)
    starts.append(at - (len(content) - len(content.lstrip())))
    position = at + len(trimmed)
  return starts


class TextFormat(Format):
  """`marc` or `barc` through a checkpoint's ChatTokenizer."""

  def __init__(self, name: str, chat: ChatTokenizer):
    if name not in SPECS:
      raise ValueError(f'unknown text format {name!r}; expected one of {tuple(SPECS)}')
    self.name, self.chat, self.spec = name, chat, SPECS[name]
    self.vocab_size = chat.vocab_size
    self.stop_ids = chat.stop_ids
    self.end_of_text = chat.token_id(END_OF_TEXT)
    self.pad_id = self.end_of_text

  @classmethod
  def from_checkpoint(cls, name: str, directory: str) -> TextFormat:
    return cls(name, ChatTokenizer.from_dir(directory))

  def __repr__(self) -> str:
    return f'TextFormat({self.name!r})'

  def render(self, pairs, test_input, test_output=None) -> tuple[str, list[tuple[int, int]], Chat]:
    """(text, character spans of the candidate targets, chat): the demonstration outputs
    first, in order, then (with a test output) the whole assistant message."""
    chat = self.spec.chat(pairs, test_input, test_output)
    text = self.chat.render(chat.messages, add_generation_prompt=test_output is None)
    starts = _content_starts(text, chat.messages)
    spans = [(starts[m] + a, starts[m] + b) for m, a, b in chat.demo_outputs]
    if test_output is not None:
      prefix = self.chat.render(chat.messages[:-1], add_generation_prompt=False)
      if not text.startswith(prefix):
        raise ValueError(f'{self.name}: the chat template does not render messages incrementally')
      spans.append((len(prefix), len(text)))
    return text, spans, chat

  def encode_task(self, pairs, test_input, test_output=None, loss='all_but_first'):
    loss = loss_mode(loss)
    pairs = list(pairs)
    text, spans, _ = self.render(pairs, test_input, test_output)
    ids, offsets = self.chat.encode(text)
    if test_output is None:
      return ids, np.zeros(len(ids), np.int32)
    if loss == 'inputs_too':  # torchtune's train_on_input: every message token
      loss_mask = np.arange(len(ids)) > 0
    else:
      first = {'test_only': len(pairs), 'all_outputs': 0, 'all_but_first': 1}[loss]
      loss_mask = np.zeros(len(ids), bool)
      for start, end in spans[first:]:
        loss_mask |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
    # torchtune ends a training sequence with <|end_of_text|>, masked.
    ids = np.append(ids, self.end_of_text).astype(np.int32)
    return ids, np.append(loss_mask, False).astype(np.int32)

  @functools.lru_cache(maxsize=1024)
  def answer_tokens(self, shape):
    """Tokens of the longest answer of this shape (every cell the costliest colour)."""
    return 1 + max(
        len(self.chat.encode(self.spec.answer_text(np.full(shape, c)))[0])
        for c in range(NUM_COLORS)
    )

  def parse_answer(self, tokens_N):
    tokens = np.asarray(tokens_N).reshape(-1)
    stops = np.flatnonzero(np.isin(tokens, self.stop_ids))
    if stops.size:
      tokens = tokens[: stops[0]]
    try:
      return self.spec.parse(self.chat.decode(tokens))
    except (ValueError, OverflowError):  # ids outside the vocabulary
      return None

  def pair_tokens(self, x, y):
    return len(self.chat.encode(self.spec.demo_text(x, y))[0])
