"""A checkpoint's own tokenizer and chat template, without transformers.

`tokenizer.json` is read with the `tokenizers` package; the chat template of
`tokenizer_config.json` is rendered with jinja2 the way transformers'
`apply_chat_template` renders it (a sandboxed environment with trim_blocks and
lstrip_blocks, `raise_exception` and `strftime_now`), so a Llama-3 checkpoint
gets exactly the text it was trained on, special tokens included. Encoding
parses the special tokens out of the rendered text and adds none of its own:
the template writes `<|begin_of_text|>` itself.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
from collections.abc import Sequence

import jinja2
import jinja2.sandbox
import numpy as np
from tokenizers import Tokenizer

from ttt_jax import atomic_io, checked_read
from ttt_jax.errors import DamagedFileError

TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'
# What vLLM stopped at in the reference (the eos token and <|eot_id|>), plus end of text.
STOP_TOKENS = ('<|eot_id|>', '<|end_of_text|>')


def _raise(message: str):
  raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


@functools.cache
def _environment() -> jinja2.Environment:
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
  return env


def _token_text(value) -> str | None:
  """A tokenizer_config special-token entry (a string or an AddedToken dict) as text."""
  if isinstance(value, dict):
    return value.get('content')
  return value


class ChatTokenizer:
  """tokenizer.json + the chat template: messages -> text -> token ids (with char offsets)."""

  def __init__(self, tokenizer: Tokenizer, chat_template: str, bos_token: str, eos_token: str):
    self.tokenizer = tokenizer
    self.template = _environment().from_string(chat_template)
    self.bos_token, self.eos_token = bos_token, eos_token

  @classmethod
  def from_dir(cls, directory: str) -> ChatTokenizer:
    paths = [os.path.join(directory, f) for f in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(
          f'{directory}: no {", ".join(os.path.basename(p) for p in missing)} (the text '
          "formats read the checkpoint's own tokenizer and chat template)"
      )
    config = checked_read.read_json_object(paths[1])
    template = config.get('chat_template')
    if isinstance(template, list):  # [{'name': 'default', 'template': ...}, ...]
      template = next((t['template'] for t in template if t.get('name') == 'default'), None)
    if not template:
      raise ValueError(f'{paths[1]}: field chat_template is missing or empty')
    bos, eos = (_token_text(config.get(k)) for k in ('bos_token', 'eos_token'))
    if not bos or not eos:
      raise ValueError(f'{paths[1]}: fields bos_token and eos_token are required')
    try:
      tokenizer = Tokenizer.from_file(paths[0])
    except Exception as e:  # pylint: disable=broad-except (tokenizers raises plain Exception)
      size = os.path.getsize(paths[0])
      raise DamagedFileError(
          paths[0], f'not a tokenizer the tokenizers package reads ({size} bytes: {e})'
      ) from None
    return cls(tokenizer, template, bos, eos)

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def token_id(self, token: str) -> int:
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f'the tokenizer has no token {token!r}')
    return token_id

  @functools.cached_property
  def stop_ids(self) -> tuple[int, ...]:
    tokens = dict.fromkeys([self.eos_token, *STOP_TOKENS])
    return tuple(self.token_id(t) for t in tokens if self.tokenizer.token_to_id(t) is not None)

  def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    """The chat template applied to `messages` ({'role', 'content'} dicts)."""
    return self.template.render(
        messages=list(messages),
        add_generation_prompt=add_generation_prompt,
        bos_token=self.bos_token,
        eos_token=self.eos_token,
    )

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [S], char offsets int32 [S, 2]) of text with its special tokens parsed."""
    encoding = self.tokenizer.encode(text, add_special_tokens=False)
    return np.asarray(encoding.ids, np.int32), np.asarray(encoding.offsets, np.int32).reshape(-1, 2)

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def copy_tokenizer_files(src: str, dst: str) -> None:
  """tokenizer.json and tokenizer_config.json of checkpoint `src` into `dst` (an export
  of a model fine-tuned in a text format must carry its tokenizer)."""
  for name in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE):
    if os.path.exists(os.path.join(src, name)):
      os.makedirs(dst, exist_ok=True)
      with atomic_io.replacing(os.path.join(dst, name)) as tmp:
        shutil.copyfile(os.path.join(src, name), tmp)
