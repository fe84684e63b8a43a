"""Atomic writes: the old file or the new one, never half of one; a full disk is one line
naming the file and leaves the previous file intact."""

import errno
import io
import json
import os
import sys

import numpy as np
import pytest
import safetensors.numpy

from ttt_jax import atomic_io, errors
from ttt_jax.errors import DiskFullError


def _leftovers(directory):
  return [name for name in os.listdir(directory) if name.endswith('.tmp')]


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'submission.json')
  atomic_io.write_json(path, {'a': 1})
  atomic_io.write_json(path, {'a': 2}, indent=1)
  assert json.load(open(path)) == {'a': 2}
  assert _leftovers(tmp_path) == []


def test_a_writer_that_fails_midway_leaves_the_previous_file(tmp_path):
  path = str(tmp_path / 'report.md')
  atomic_io.write_text(path, 'old report\n')
  with pytest.raises(RuntimeError, match='killed'):
    with atomic_io.replacing(path) as tmp:
      with open(tmp, 'w') as f:
        f.write('half of a new rep')
      raise RuntimeError('killed mid-write')
  assert open(path).read() == 'old report\n'
  assert _leftovers(tmp_path) == []


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(small_disk):
  path = os.path.join(small_disk.path, 'submission.json')
  atomic_io.write_json(path, {'task': [[1, 2]]})
  before = open(path, 'rb').read()
  small_disk.fill()
  with pytest.raises(DiskFullError) as raised:
    atomic_io.write_json(path, {'task': [[3] * 5000]})
  assert raised.value.path == path and str(raised.value).startswith(f'{path}: no space left')
  assert '\n' not in str(raised.value)
  assert open(path, 'rb').read() == before
  assert _leftovers(small_disk.path) == []
  small_disk.free()  # space again: the write goes through
  atomic_io.write_json(path, {'task': [[3] * 5000]})
  assert json.load(open(path))['task'][0][:2] == [3, 3]


def test_a_full_disk_under_a_rust_writer_is_recognised(small_disk):
  """safetensors writes from Rust and reports ENOSPC only in its message."""
  if small_disk.kind != 'tmpfs':
    pytest.skip('a Rust writer bypasses the patched open: only a real filesystem fills')
  path = os.path.join(small_disk.path, 'adapter_model.safetensors')
  small_disk.fill()
  with pytest.raises(DiskFullError, match='adapter_model.safetensors: no space left'):
    with atomic_io.replacing(path) as tmp:
      safetensors.numpy.save_file({'w': np.ones((1 << 16,), np.float32)}, tmp)
  assert not os.path.exists(path) and _leftovers(small_disk.path) == []


def test_disk_full_is_recognised_from_errno_or_message():
  assert errors.is_disk_full(OSError(errno.ENOSPC, 'No space left on device'))
  assert errors.is_disk_full(OSError(errno.EDQUOT, 'Disk quota exceeded'))
  rust = 'Error while serializing: I/O error: No space left on device (os error 28)'
  assert errors.is_disk_full(Exception(rust))
  assert not errors.is_disk_full(OSError(errno.EACCES, 'Permission denied'))


def test_launch_scripts_print_a_file_error_or_a_full_disk_as_one_line(monkeypatch):
  for raised, want in (
      (DiskFullError('/runs/x/submission.json', 'no space left'), 'FATAL /runs/x/submission.json'),
      (OSError(errno.ENOSPC, 'No space left on device', '/runs/x/log'), 'FATAL /runs/x/log: No'),
  ):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, 'stderr', stderr)
    with pytest.raises(SystemExit) as exited:
      with errors.as_usage_errors():
        raise raised
    assert exited.value.code == 1
    assert stderr.getvalue().startswith(want) and stderr.getvalue().count('\n') == 1
