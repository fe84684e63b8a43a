"""One process per run directory: a lock file that names its holder.

    with RunLock(workdir):
      ...  # the run: nobody else writes workdir meanwhile

takes an exclusive lock on `workdir/run.lock` and writes its holder (pid,
host, start time) into it. A second process on the same directory gets a
`RunLockedError` naming the holder; a lock left by a killed process is taken
over (the log says whose it was).

Why `fcntl.flock` and not a file made with O_EXCL plus a liveness check: the
kernel drops a flock when its holder dies, kill -9 and power cuts included,
so a stale lock needs no guess (a pid can be reused by another program, and
the pid of a holder on another host of a shared filesystem cannot be checked
at all). Linux's NFS client emulates flock with POSIX locks, so hosts sharing
an NFS workdir exclude each other too. The file is never removed (removing it
would let a newcomer lock a fresh file while a waiter holds the old one):
an empty file is a free lock, one with a holder whose lock is gone a stale one.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket

from absl import logging

from ttt_jax.errors import RunLockedError

LOCK_FILE = 'run.lock'


def _describe(holder: dict) -> str:
  return (
      f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
      f"started {holder.get('started', '?')}"
  )


def _read_holder(fd: int) -> dict | None:
  """The holder recorded in the lock file, None when it is empty or unreadable."""
  data = os.pread(fd, 4096, 0)
  try:
    holder = json.loads(data)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None
  return holder if isinstance(holder, dict) else None


class RunLock:
  """An exclusive lock on `directory` (created if missing) for the length of a `with`."""

  def __init__(self, directory: str):
    self.directory = os.fspath(directory)
    self.path = os.path.join(self.directory, LOCK_FILE)
    self._fd: int | None = None

  def __enter__(self) -> RunLock:
    os.makedirs(self.directory, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      who = _describe(holder) if holder else 'another process (starting up)'
      raise RunLockedError(
          self.path,
          f'{self.directory} is in use by {who}; wait for it to end, or use another directory',
      ) from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        os.close(fd)
        raise
      logging.warning('%s: this filesystem cannot lock files (%s); running unlocked', self.path, e)
    stale = _read_holder(fd)
    if stale:
      logging.warning(
          '%s: taking over the lock of %s, which ended without releasing it',
          self.path,
          _describe(stale),
      )
    me = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
    }
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(me).encode(), 0)
    except OSError as e:  # a full disk: the flock still excludes others, unnamed
      logging.warning(
          '%s: cannot record the holder (%s); the lock holds all the same', self.path, e
      )
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a free lock: no holder to report
      os.close(self._fd)  # releases the flock
      self._fd = None
