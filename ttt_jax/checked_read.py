"""Reading back files a run depends on, with one clear error when one is damaged.

A missing, empty, truncated or unparseable JSON or safetensors file raises
`errors.DamagedFileError` naming it and its size (a kill during a copy or a
full disk leaves such files), never a parser's traceback. Callers check the
contents against what they expect and raise the same error for a mismatch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from ttt_jax.errors import DamagedFileError


def _damaged(path: str, what: str, error: Exception) -> DamagedFileError:
  return DamagedFileError(
      path, f'not {what} ({os.path.getsize(path)} bytes: truncated or damaged? {error})'
  )


def _exists(path: str) -> None:
  if not os.path.isfile(path):
    raise DamagedFileError(path, 'missing')


def read_json(path: str) -> Any:
  """A JSON file's contents."""
  _exists(path)
  try:
    with open(path, 'rb') as f:
      return json.loads(f.read())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _damaged(path, 'valid JSON', e) from None


def read_json_object(path: str) -> dict:
  """A JSON file that must hold an object (a dict)."""
  data = read_json(path)
  if not isinstance(data, dict):
    raise DamagedFileError(path, f'holds a JSON {type(data).__name__}, not an object')
  return data


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a safetensors file, as numpy."""
  _exists(path)
  try:
    return safetensors.numpy.load_file(path)
  except (SafetensorError, TypeError, ValueError) as e:
    raise _damaged(path, 'a readable safetensors file', e) from None


def open_safetensors(path: str):
  """`safe_open(path, 'np')`: the header is read and checked (names, shapes, dtypes, the
  file long enough for them); tensors are read on demand."""
  _exists(path)
  try:
    return safe_open(path, framework='np')
  except (SafetensorError, TypeError, ValueError) as e:
    raise _damaged(path, 'a readable safetensors file', e) from None
