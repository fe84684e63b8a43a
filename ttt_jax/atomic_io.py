"""Files that a reader never sees half-written, and a full disk reported as one line.

Every file another process or a rerun reads back whole (submission.json,
details, reports, adapters, exported checkpoints, tables) is written with
`write_bytes` / `write_text` / `write_json`, or, for a writer that takes a
path, inside `replacing(path)`: the data goes to a temporary name in the same
directory (`.<name>.<pid>.<random>.tmp`: the same filesystem, so the rename is
atomic), is fsynced, and `os.replace`s `path`; then the directory is fsynced,
so the rename survives a power cut. A reader, or a run killed at any moment,
sees the old complete file or the new one, never a mix.

A full disk or quota (ENOSPC / EDQUOT, also as a Rust or C++ writer reports
it) raises `errors.DiskFullError` naming `path`; the temporary file is removed
and the previous `path` is left as it was. `reporting_full_disk(path)` does
the same for other writes, such as appending to a JSON-lines log
(`checkpoint.append_record`), whose torn last line the readers skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

from ttt_jax.errors import DiskFullError, is_disk_full


@contextlib.contextmanager
def reporting_full_disk(
    path: str, kept: str = 'the previous file there is intact'
) -> Iterator[None]:
  """Turns a full disk met inside the block into a DiskFullError naming `path`."""
  try:
    yield
  except DiskFullError:
    raise
  except Exception as e:  # pylint: disable=broad-except (Rust/C++ writers raise plain errors)
    if not is_disk_full(e):
      raise
    raise DiskFullError(
        path, f'no space left on the device ({kept}); free some space and rerun'
    ) from e


def _fsync_directory(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError:  # some filesystems cannot fsync a directory; the rename still happened
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path` for the block to write; when the block ends
  without error, that file is fsynced and atomically replaces `path`."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(
      directory, f'.{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp'
  )
  try:
    with reporting_full_disk(path):
      yield tmp
      fd = os.open(tmp, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _fsync_directory(directory)


def write_bytes(path: str, data: bytes) -> None:
  """`path` holds `data`, atomically (see the module docstring)."""
  with replacing(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str, obj: Any, **dump_options) -> None:
  """`json.dump(obj, **dump_options)` into `path`, atomically."""
  write_text(path, json.dumps(obj, **dump_options))
