"""Errors a user can act on (a bad flag or config value, an unknown selector, a missing,
damaged or locked file, a full disk), as opposed to bugs: the launch scripts print them as
one line naming the flag or the file, as absl does for a bad flag value, not as a
traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys

# What a full disk or an exhausted quota looks like, from Python (OSError.errno) or from a
# Rust or C++ writer (safetensors, tensorstore) that reports it only in its message.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class UserError(ValueError):
  """A bad value given by the user, or a file the run cannot use; the message names the
  flag, field or file."""


class FileError(UserError):
  """A file (or directory) the run cannot use as it is; `path` names it."""

  def __init__(self, path: str, why: str):
    self.path, self.why = str(path), why
    super().__init__(f'{path}: {why}')


class DamagedFileError(FileError):
  """A file we read back is missing, truncated, unparseable or does not match the model."""


class DiskFullError(FileError):
  """The disk (or quota) filled up while writing `path`."""


class RunLockedError(FileError):
  """Another process holds the run directory's lock (ttt_jax/run_lock.py)."""


def is_disk_full(e: BaseException) -> bool:
  """Whether `e` says the disk or the quota is full."""
  if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
    return True
  return any(os.strerror(code) in str(e) for code in DISK_FULL_ERRNOS)


@contextlib.contextmanager
def blame(flag: str):
  """Re-raises a ValueError / FileNotFoundError inside the block as a UserError naming
  `flag` (e.g. 'config.data.selector'): wrap only code that checks that one value."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, FileNotFoundError) as e:
    raise UserError(f'--{flag}: {e}') from e


@contextlib.contextmanager
def as_usage_errors():
  """In a launch script's main(): a UserError ends the run with one line naming the flag
  or the file, as absl reports a bad flag value (exit status 1), instead of a traceback;
  so does a full disk met anywhere else."""
  try:
    yield
  except FileError as e:
    sys.stderr.write(f'FATAL {e}\n')
    sys.exit(1)
  except UserError as e:
    sys.stderr.write(f'FATAL {e}\nPass --helpfull to see help on flags.\n')
    sys.exit(1)
  except OSError as e:
    if e.errno not in DISK_FULL_ERRNOS:
      raise
    sys.stderr.write(f'FATAL {e.filename or "a file"}: {os.strerror(e.errno)}\n')
    sys.exit(1)
