"""The sandbox's parent side: a pool of warm worker processes that run untrusted programs.

`Executor(workers)` starts `workers` fork servers (worker.py), each inside
bubblewrap where `bwrap` is installed and works (read-only root, private
/tmp, no network, its own PID and user namespaces, dies with us), and keeps
them across calls. `Executor.run(jobs, limits)` streams `(job, replies)` in
completion order, one reply per input of the job (worker.py documents the
reply); a worker that dies or stops answering is replaced and its job
answered with errors, so no program can stop a run.

The layers, outermost first: bubblewrap (optional); per program a fresh
forked process with OS limits (confine.py); the Python-level guard
(restricted.py). `Executor.isolation` says which were in force.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any

Grid = Sequence[Sequence[int]]

_START_TIMEOUT_S = 120.0
_GRACE_S = 10.0  # beyond the job's own time limits, before a worker is presumed stuck
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BWRAP_ARGS = (
    '--ro-bind', '/', '/',
    '--dev', '/dev',
    '--proc', '/proc',
    '--tmpfs', '/tmp',
    '--unshare-all',
    '--uid', '65534',
    '--gid', '65534',
    '--die-with-parent',
    '--new-session',
    '--',
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one program may use."""

  timeout_s: float = 2.0  # wall clock per input (BARC: 2 s per execution)
  memory_mb: int = 1024  # address space a program may add to the worker's
  guard: bool = True  # the Python-level guard; False only to test the OS layers


@dataclasses.dataclass(frozen=True)
class Job:
  """One program to run on every input; `key` is the caller's, handed back."""

  key: Hashable
  source: str
  function_name: str
  inputs: Sequence[Grid]


@functools.cache
def bwrap_works() -> bool:
  """Whether bubblewrap is installed and can make its namespaces here."""
  path = shutil.which('bwrap')
  if path is None:
    return False
  probe = subprocess.run([path, *_BWRAP_ARGS, 'true'], capture_output=True, check=False)
  return probe.returncode == 0


def _worker_env() -> dict[str, str]:
  """A clean environment: nothing of ours leaks in; string hashing fixed so a
  program's set and dict orders are the same on every run."""
  env = {'PATH': os.defpath, 'PYTHONHASHSEED': '0', 'PYTHONDONTWRITEBYTECODE': '1'}
  env['PYTHONPATH'] = _PACKAGE_ROOT
  return env


class _Worker:
  """One fork server process and the job it is running."""

  def __init__(self, use_bwrap: bool):
    command = [sys.executable, '-s', '-m', 'ttt_jax.induction.worker']
    if use_bwrap:
      command = [shutil.which('bwrap'), *_BWRAP_ARGS, *command]
    self.stderr = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with (closed in close())
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=self.stderr,
        env=_worker_env(),
        cwd=_PACKAGE_ROOT,
    )
    self.fd = self.process.stdout.fileno()
    self.buffer = b''
    self.job: Job | None = None
    self.deadline = 0.0
    self.isolation: list[str] = []

  def wait_ready(self) -> _Worker:
    """Waits for the worker's `ready` line (it imports numpy and scipy first)."""
    ready = self.read_line(time.monotonic() + _START_TIMEOUT_S)
    if not ready or not json.loads(ready).get('ready'):
      self.stderr.seek(0)
      why = self.stderr.read().decode(errors='replace')[-2000:]
      self.close()
      raise RuntimeError(f'the sandbox worker did not start: {why}')
    self.isolation = json.loads(ready)['isolation']
    return self

  def read_line(self, deadline: float) -> bytes | None:
    """Blocks for the next line until `deadline`; None on timeout or end of output."""
    while b'\n' not in self.buffer:
      wait = deadline - time.monotonic()
      if wait <= 0 or not self.poll(wait):
        return None
    line, self.buffer = self.buffer.split(b'\n', 1)
    return line

  def poll(self, wait: float = 0.0) -> bool:
    """Reads what is there (waiting up to `wait`); False at end of output or timeout."""
    selector = selectors.DefaultSelector()
    with selector:
      selector.register(self.fd, selectors.EVENT_READ)
      if not selector.select(wait):
        return False
    chunk = os.read(self.fd, 1 << 20)
    self.buffer += chunk
    return bool(chunk)

  def start(self, job: Job, limits: Limits) -> None:
    message = {
        'source': job.source,
        'function': job.function_name,
        'inputs': [[list(map(int, row)) for row in grid] for grid in job.inputs],
        'timeout_s': limits.timeout_s,
        'memory_mb': limits.memory_mb,
        'guard': limits.guard,
    }
    self.job = job
    self.deadline = time.monotonic() + len(job.inputs) * (limits.timeout_s + 1) + _GRACE_S
    self.process.stdin.write((json.dumps(message) + '\n').encode())
    self.process.stdin.flush()

  def close(self) -> None:
    """Ends the worker (its program processes die with it)."""
    try:
      self.process.stdin.close()
      self.process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
      self.process.send_signal(signal.SIGKILL)
      self.process.wait()
    self.process.stdout.close()
    self.stderr.close()


class Executor:
  """A pool of warm sandbox workers; reuse it across calls, close it at the end."""

  def __init__(self, workers: int | None = None, *, bwrap: str = 'auto'):
    """workers: processes (None: one per CPU); bwrap: 'auto' (use it where it works),
    'on' (require it), 'off'."""
    if bwrap not in ('auto', 'on', 'off'):
      raise ValueError(f"bwrap must be 'auto', 'on' or 'off', not {bwrap!r}")
    self.use_bwrap = bwrap != 'off' and bwrap_works()
    if bwrap == 'on' and not self.use_bwrap:
      raise RuntimeError('bwrap=on, but bubblewrap is not installed or cannot run here')
    started = [_Worker(self.use_bwrap) for _ in range(workers or os.cpu_count() or 1)]
    try:
      self.workers = [w.wait_ready() for w in started]  # they start side by side
    except RuntimeError:
      for worker in started:
        worker.close()
      raise
    layers = (['bubblewrap'] if self.use_bwrap else []) + ['a forked process per program']
    self.isolation = ', '.join(layers + self.workers[0].isolation + ['python guard'])

  def run(
      self, jobs: Iterable[Job], limits: Limits = Limits()
  ) -> Iterator[tuple[Job, list[dict[str, Any]]]]:
    """Runs the jobs on the pool (pulled lazily); yields each with its replies as it ends."""
    pending = iter(jobs)
    exhausted = False
    try:
      while True:
        idle = [w for w in self.workers if w.job is None]
        while idle and not exhausted:
          job = next(pending, None)
          if job is None:
            exhausted = True
          else:
            idle.pop().start(job, limits)
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
          return
        yield from self._collect(busy)
    finally:  # left early (an error, or the caller stopped): no stale reply may stay behind
      for worker in [w for w in self.workers if w.job is not None]:
        self._replace(worker, 'abandoned')

  def _collect(self, busy: list[_Worker]) -> Iterator[tuple[Job, list[dict[str, Any]]]]:
    """Waits for at least one busy worker to answer, die or run out of time."""
    selector = selectors.DefaultSelector()
    with selector:
      for worker in busy:
        selector.register(worker.fd, selectors.EVENT_READ, worker)
      wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
      ready = [key.data for key, _ in selector.select(wait)]
    for worker in busy:
      alive = worker.poll() if worker in ready else True
      if b'\n' in worker.buffer:
        line, worker.buffer = worker.buffer.split(b'\n', 1)
        yield self._finish(worker, json.loads(line)['replies'])
      elif not alive or time.monotonic() > worker.deadline:
        why = 'the sandbox worker died' if not alive else 'the sandbox worker stopped answering'
        yield self._replace(worker, why)

  def _finish(self, worker: _Worker, replies: list[dict[str, Any]]):
    job, worker.job = worker.job, None
    return job, replies

  def _replace(self, worker: _Worker, why: str):
    job = worker.job
    worker.close()
    self.workers[self.workers.index(worker)] = _Worker(self.use_bwrap).wait_ready()
    return job, [{'error': why}] * len(job.inputs)

  def close(self) -> None:
    for worker in self.workers:
      worker.close()
    self.workers = []

  def __enter__(self) -> Executor:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
