"""The induction model's prompt and answer: a task as chat messages asking for a Python
`transform`, rendered with the checkpoint's chat template; an answer parsed to program source.

BARC's induction checkpoints (barc0/Llama-3.1-ARC-Potpourri-Induction-8B) were trained
on this prompt (xu3kev/BARC finetune/alignment-handbook/gen_dataset_both.py:
make_input_prompt_induction, convert_chat_format_induction): a system message, then one
user message with the demonstrations as colour words, every test input, and the
request for `transform`. The model answers with a short preamble and a ```python block.

It lives in the format layer beside the text formats it shares its pieces with (the
checkpoint's ChatTokenizer, the colour words), but it is not a `Format`: that interface
is grids both ways, one prompt per test input, while this is one prompt per task and
its answer is source code, which the sandbox runs (ttt_jax/induction/).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ttt_jax.data.arc import Task
from ttt_jax.formats.chat import ChatTokenizer
from ttt_jax.formats.text import BARC_INTRO, word_text

# The literal prompt strings of gen_dataset_both.py (the model was trained on them).
INDUCTION_SYSTEM = (
    'You are a world-class puzzle solver with exceptional pattern recognition skills and '
    'expertise in Python programming. Your task is to analyze puzzles and provide Python '
    'solutions.'
)
INDUCTION_TEST = 'Here is the input grid for the test example:\nInput:\n'
INDUCTION_ASK = (
    '\nWrite a Python function `transform` that can convert any given input grid to its '
    'corresponding output grid based on the pattern observed in the reference examples.'
)


def _grid(grid: np.ndarray) -> str:
  """A grid as colour words, every row ended by a newline (BARC's EXTRA_NEWLINE)."""
  return word_text(grid) + '\n'


def induction_user_prompt(task: Task) -> str:
  """The user message: the numbered demonstrations, then every test input."""
  text = BARC_INTRO
  for i, pair in enumerate(task.train):
    text += f'Example {i + 1}\nInput:\n{_grid(pair.input)}\nOutput:\n{_grid(pair.output)}\n\n'
  text += INDUCTION_TEST + '\n'.join(_grid(pair.input) for pair in task.test)
  return text + INDUCTION_ASK


def induction_messages(task: Task) -> list[dict]:
  """The chat that asks the induction model for a program solving `task`."""
  return [
      {'role': 'system', 'content': INDUCTION_SYSTEM},
      {'role': 'user', 'content': induction_user_prompt(task)},
  ]


_PYTHON_BLOCK = re.compile(r'```python(.*?)```', re.DOTALL)
_ANY_BLOCK = re.compile(r'```(.*?)```', re.DOTALL)


def code_blocks(text: str) -> list[str]:
  """The ```python blocks of an answer, stripped; if it has none, its plain ``` blocks
  (BARC utils.py parse_code)."""
  blocks = _PYTHON_BLOCK.findall(text) or _ANY_BLOCK.findall(text)
  return [b.strip() for b in blocks]


def program_source(text: str) -> str | None:
  """The program an answer gives: its first code block (eval_code_samples.py takes the
  first), or None when it has no closed block (an answer cut off by the token budget)."""
  blocks = code_blocks(text)
  return blocks[0] if blocks else None


class InductionPrompt:
  """Tasks -> prompt token ids, and generated ids -> program source, in a checkpoint's
  tokenizer and chat template."""

  def __init__(self, chat: ChatTokenizer, vllm_bos: bool = True):
    # BARC's vllm_inference.py hands vLLM the rendered text, which vLLM tokenizes with
    # add_special_tokens=True: a second <|begin_of_text|> before the template's own
    # (vllm-project/vllm#16976); its TRL fine-tuning tokenized the same way.
    self.chat, self.vllm_bos = chat, vllm_bos
    self.stop_ids = chat.stop_ids
    self.pad_id = chat.token_id('<|end_of_text|>')

  @classmethod
  def from_checkpoint(cls, directory: str, vllm_bos: bool = True) -> InductionPrompt:
    return cls(ChatTokenizer.from_dir(directory), vllm_bos)

  def render(self, task: Task) -> str:
    """The prompt as text: the chat template with the generation prompt."""
    return self.chat.render(induction_messages(task), add_generation_prompt=True)

  def encode(self, task: Task) -> np.ndarray:
    """The prompt's token ids, int32 [S]."""
    ids, _ = self.chat.encode(self.render(task))
    if self.vllm_bos:
      ids = np.concatenate([[self.chat.token_id(self.chat.bos_token)], ids])
    return ids.astype(np.int32)

  def answer_text(self, tokens_N: Sequence[int]) -> str:
    """Generated ids up to the first stop id, as text (ids outside the vocabulary: '')."""
    tokens = np.asarray(tokens_N).reshape(-1)
    stops = np.flatnonzero(np.isin(tokens, self.stop_ids))
    if stops.size:
      tokens = tokens[: stops[0]]
    try:
      return self.chat.decode(tokens)
    except (ValueError, OverflowError):
      return ''

  def program(self, tokens_N: Sequence[int]) -> str | None:
    """The program of a generated answer, or None."""
    return program_source(self.answer_text(tokens_N))
