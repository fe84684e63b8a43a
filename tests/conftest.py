"""Fixtures shared across the test folders: a small filesystem that fills up, damaged
files, and a kill -9 at the right moment."""

import builtins
import errno
import os
import random
import signal
import subprocess
import time

import pytest

SMALL_DISK_BYTES = 1 << 20


class SmallDisk:
  """A directory on a filesystem of `size` bytes that a test can fill: a real tmpfs where
  the test may mount one (as root), else (`kind == 'patched'`) `open` patched so that a
  write past `size` bytes under the directory writes what fits and raises ENOSPC, as a
  full disk does."""

  def __init__(self, path: str, kind: str, size: int):
    self.path, self.kind, self.size = path, kind, size
    self.filler = os.path.join(path, 'filler')

  def used(self) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(self.path)
        for name in names
    )

  def fill(self) -> None:
    """Writes a filler file until the disk is full."""
    with open(self.filler, 'ab', buffering=0) as f:
      try:
        while True:
          f.write(b'\0' * 4096)
      except OSError as e:
        assert e.errno == errno.ENOSPC, e

  def free(self) -> None:
    os.remove(self.filler)


class _LimitedFile:
  """A file opened for writing on a patched SmallDisk: writes stop at the disk's size."""

  def __init__(self, f, disk: SmallDisk):
    self._f, self._disk = f, disk

  def write(self, data):
    room = self._disk.size - self._disk.used()
    if len(data) > room:
      self._f.write(data[: max(room, 0)])  # a full disk writes what fits: a torn line
      self._f.flush()
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._f.name)
    written = self._f.write(data)
    self._f.flush()
    return written

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()

  def __getattr__(self, name):
    return getattr(self._f, name)


def _mount_tmpfs(path: str, size: int) -> bool:
  try:
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path],
        capture_output=True,
        timeout=10,
    )
  except (OSError, subprocess.SubprocessError):
    return False
  return result.returncode == 0


def _small_disk(kind: str, tmp_path, monkeypatch):
  """Yields a SmallDisk of SMALL_DISK_BYTES: kind 'tmpfs' (None where mounting one is not
  allowed: not root, as on CI), 'patched', or 'auto' (a tmpfs where allowed, else patched)."""
  path = str(tmp_path / 'disk')
  os.makedirs(path)
  if kind in ('tmpfs', 'auto') and _mount_tmpfs(path, SMALL_DISK_BYTES):
    try:
      yield SmallDisk(path, 'tmpfs', SMALL_DISK_BYTES)
    finally:
      subprocess.run(['umount', '-l', path], check=False)
    return
  if kind == 'tmpfs':
    yield None
    return
  disk = SmallDisk(path, 'patched', SMALL_DISK_BYTES)
  real_open = builtins.open

  def limited_open(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    inside = isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(
        path + os.sep
    )
    return _LimitedFile(f, disk) if inside and set(mode) & set('wax+') else f

  monkeypatch.setattr(builtins, 'open', limited_open)
  yield disk


@pytest.fixture(params=['tmpfs', 'patched'])
def small_disk(request, tmp_path, monkeypatch):
  """A SmallDisk of each kind; the tmpfs one is skipped where it cannot be mounted."""
  for disk in _small_disk(request.param, tmp_path, monkeypatch):
    if disk is None:
      pytest.skip('cannot mount a tmpfs here (not root?); the patched disk stands in')
    yield disk


@pytest.fixture
def any_small_disk(tmp_path, monkeypatch):
  """One SmallDisk: a real tmpfs where it can be mounted, else the patched one."""
  yield from _small_disk('auto', tmp_path, monkeypatch)


# --------------------------------------------------------------------- damaged files

DAMAGES = ('truncated', 'zero_length', 'random_bytes', 'missing')


def damage_file(path: str, kind: str) -> None:
  """Damages a file as a crash, a full disk or a bad copy leaves it: `truncated` (cut to
  1000 bytes, or to half when shorter), `zero_length`, `random_bytes` (its length of
  seeded noise) or `missing`."""
  size = os.path.getsize(path)
  if kind == 'truncated':
    os.truncate(path, 1000 if size > 2000 else size // 2)
  elif kind == 'zero_length':
    os.truncate(path, 0)
  elif kind == 'random_bytes':
    with open(path, 'wb') as f:
      f.write(random.Random(size).randbytes(size))  # seeded: the same noise every run
  elif kind == 'missing':
    os.remove(path)
  else:
    raise ValueError(f'unknown damage {kind!r}')


@pytest.fixture
def damage():
  """`damage(path, kind)`: see damage_file."""
  return damage_file


# --------------------------------------------------------------------- kill -9


def kill_when(proc: subprocess.Popen, ready, timeout: float, what: str) -> None:
  """SIGKILLs `proc` (no cleanup runs in it) as soon as `ready()` holds; fails if it ends
  first or `timeout` seconds pass. The process never outlives the call."""
  deadline = time.time() + timeout
  try:
    while not ready():
      assert proc.poll() is None, f'{what}: the process ended before it could be killed'
      assert time.time() < deadline, f'{what}: not reached in {timeout} s'
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.fixture
def kill9():
  """`kill9(proc, ready, timeout, what)`: see kill_when."""
  return kill_when
