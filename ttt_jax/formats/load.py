"""Which formats exist and how to load one by name: the one file that knows them all
(base.py is the interface, compact.py and text.py implement it, none imports this)."""

from __future__ import annotations

from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import CompactFormat

FORMATS = ('compact', 'marc', 'barc')


def load_format(name: str, checkpoint_dir: str = '') -> Format:
  """The format `name`; the text formats read the tokenizer and chat template of
  `checkpoint_dir` (tokenizer.json, tokenizer_config.json)."""
  if name not in FORMATS:
    raise ValueError(f'unknown format {name!r}; expected one of {FORMATS}')
  if name == 'compact':
    return CompactFormat()
  from ttt_jax.formats import text  # pylint: disable=import-outside-toplevel (tokenizers, jinja2)

  if not checkpoint_dir:
    raise ValueError(f'format {name!r} needs a checkpoint_dir with the tokenizer files')
  return text.TextFormat.from_checkpoint(name, checkpoint_dir)
