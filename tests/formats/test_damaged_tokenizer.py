"""A text format's tokenizer files, damaged: one error naming the file, not a parser's
traceback (the launch scripts print it as one FATAL line before any work)."""

import os

import pytest

import format_testlib as fl
from ttt_jax.errors import DamagedFileError
from ttt_jax.formats import chat, load_format


@pytest.mark.parametrize('kind', ['truncated', 'zero_length', 'random_bytes'])
@pytest.mark.parametrize('file', [chat.TOKENIZER_FILE, chat.TOKENIZER_CONFIG_FILE])
def test_a_damaged_tokenizer_file_is_named(tmp_path, damage, file, kind):
  fl.write_tiny_tokenizer(str(tmp_path))
  path = str(tmp_path / file)
  damage(path, kind)
  with pytest.raises(DamagedFileError) as raised:
    load_format('marc', str(tmp_path))
  assert raised.value.path == path and str(raised.value).startswith(f'{path}: not ')
  assert f'{os.path.getsize(path)} bytes' in str(raised.value)
  assert '\n' not in str(raised.value)
