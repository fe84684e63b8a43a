"""The sandbox's worker: a fork server that runs untrusted programs, one process each.

Started by `sandbox.Executor` (`python -m ttt_jax.induction.worker`, inside
bubblewrap where it is installed). It imports numpy, scipy and `common` once,
builds the program environment (restricted.py), says `ready`, then reads jobs
from stdin, one JSON line each:

  {"source": str, "function": str, "inputs": [grid, ...], "timeout_s": float, "memory_mb": int,
   "guard": bool}

For a job it forks a process that confines itself (confine.py), screens and
compiles the program and, for each input in turn, runs its module body in
fresh globals with `random` and `np.random` seeded 0 (as BARC does for each
execution), calls `function(input as int array)` and writes one reply line.
The worker itself never runs program code: it times each input (`timeout_s`
of wall clock), kills the process when one runs over or writes too much, and
forks a fresh one for the inputs after a timeout or a crash. It answers one
line per job, `{"replies": [reply, ...]}`, one reply per input, each either

  {"error": "why"}  or  {"value": {"type": "ndarray", "dtype": "int64", "shape": [h, w],
                                   "cells": [... h*w numbers, row-major ...]}}

(`cells` only for 2-D numeric arrays of at most 30 x 30: the parent validates
the rest, verify.py). A reply from the program's process is parsed and
rebuilt field by field, so whatever that process writes, the parent gets only
this shape.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import select
import signal
import sys
import time
from typing import Any

# One thread per process: the limits forbid new threads, and throughput comes from workers.
for _var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ[_var] = '1'

import numpy as np  # pylint: disable=wrong-import-position

from ttt_jax.induction import confine, restricted  # pylint: disable=wrong-import-position

MAX_SIDE = 30
MAX_REPLY_BYTES = 1 << 16  # a 30 x 30 grid of floats is ~25 KB
_ERROR_CHARS = 300


# ------------------------------------------------------- the program's process


def _error(e: BaseException) -> str:
  """`Type: message (line N)`, the line being the program's last one in the traceback."""
  line = None
  tb = e.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == restricted.PROGRAM_FILENAME:
      line = tb.tb_lineno
    tb = tb.tb_next
  text = f'{type(e).__name__}: {e}'[:_ERROR_CHARS]
  return text if line is None else f'{text} (line {line})'


def describe_output(output: Any) -> dict[str, Any]:
  """A program's return value as plain data: the type, and for a numpy array its
  dtype and shape, and its cells when it is 2-D, numeric and small enough to be a grid."""
  if not isinstance(output, np.ndarray):
    return {'type': type(output).__name__}
  array = np.asarray(output)  # a subclass becomes a plain array: no overridden methods
  value = {'type': 'ndarray', 'dtype': array.dtype.str, 'shape': list(array.shape)}
  if (
      array.ndim == 2
      and array.dtype.kind in 'biuf'
      and 0 < array.shape[0] <= MAX_SIDE
      and 0 < array.shape[1] <= MAX_SIDE
  ):
    value['cells'] = array.ravel().tolist()
  return value


def _write(line: dict[str, Any]) -> None:
  data = (json.dumps(line) + '\n').encode()
  while data:
    data = data[os.write(confine.REPLY_FD, data) :]


def _run_inputs(env: restricted.Environment, job: dict[str, Any], start: int) -> None:
  """In the program's process, after `confine`: one reply line per input from `start`.

  Without `guard` (tests of the OS layer only) the program gets the real builtins.
  """
  guarded = job.get('guard', True)
  try:
    if guarded:
      code = restricted.screen(job['source'])
    else:
      code = compile(job['source'], restricted.PROGRAM_FILENAME, 'exec')
  except (SyntaxError, ValueError, restricted.ScreenError, RecursionError, MemoryError) as e:
    _write({'program_error': _error(e)})
    return
  for i in range(start, len(job['inputs'])):
    try:
      random.seed(0)
      np.random.seed(0)
      namespace = env.fresh_globals() if guarded else {'__name__': 'program'}
      exec(code, namespace)  # pylint: disable=exec-used (screened program, confined process)
      function = namespace.get(job['function'])
      if not callable(function):
        _write({'program_error': f"the program defines no function {job['function']!r}"})
        return
      output = function(np.array(job['inputs'][i], dtype=int))
      reply = {'i': i, 'value': describe_output(output)}
    except BaseException as e:  # pylint: disable=broad-except (SystemExit too: the program's)
      reply = {'i': i, 'error': _error(e)}
    _write(reply)


def _child(env, job, start, reply_fd, abi) -> None:
  """The forked process: confine, run, exit without returning to the worker loop."""
  try:
    confine.confine(
        reply_fd,
        memory_mb=job['memory_mb'],
        cpu_seconds=math.ceil(job['timeout_s'] * (len(job['inputs']) - start)) + 1,
        worker_pid=os.getppid(),
        abi=abi,
    )
    _run_inputs(env, job, start)
  except BaseException as e:  # pylint: disable=broad-except
    try:
      _write({'program_error': f'sandbox setup failed: {_error(e)}'})
    except BaseException:  # pylint: disable=broad-except
      pass
  finally:
    os._exit(0)


# ------------------------------------------------------------------ the worker


def _clean_value(value: Any) -> dict[str, Any] | None:
  """A program's described output rebuilt from known fields, or None if malformed."""
  if not isinstance(value, dict) or not isinstance(value.get('type'), str):
    return None
  clean = {'type': value['type'][:100]}
  if value['type'] != 'ndarray':
    return clean
  dtype, shape, cells = value.get('dtype'), value.get('shape'), value.get('cells')
  if not isinstance(dtype, str) or not isinstance(shape, list) or len(shape) > 64:
    return None
  if not all(type(n) is int for n in shape):
    return None
  clean.update(dtype=dtype[:32], shape=shape)
  if cells is not None:
    if not isinstance(cells, list) or len(cells) > MAX_SIDE * MAX_SIDE:
      return None
    if not all(type(c) in (int, float, bool) for c in cells):
      return None
    clean['cells'] = cells
  return clean


def _clean_reply(line: bytes, expected: int) -> dict[str, Any] | str:
  """A reply line -> {'error'} / {'value'} for input `expected`, or a program-wide
  error string, or raises ValueError when the line is not what the runner writes."""
  record = json.loads(line)
  if not isinstance(record, dict):
    raise ValueError('not an object')
  if isinstance(record.get('program_error'), str):
    return record['program_error'][: 2 * _ERROR_CHARS]
  if record.get('i') != expected:
    raise ValueError('reply out of order')
  if isinstance(record.get('error'), str):
    return {'error': record['error'][: 2 * _ERROR_CHARS]}
  value = _clean_value(record.get('value'))
  if value is None:
    raise ValueError('malformed output description')
  return {'value': value}


def _exit_reason(status: int) -> str:
  if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
    return f'the program was killed by {name}'
  return f'the program exited (status {os.waitstatus_to_exitcode(status)})'


class Worker:
  """The fork server's state: the environment and the kernel features found."""

  def __init__(self):
    self.env = restricted.Environment()
    self.abi = confine.landlock_abi()

  def run_job(self, job: dict[str, Any]) -> list[dict[str, Any]]:
    """One reply per input: forks a process for the inputs, again after a kill."""
    replies: list[dict[str, Any]] = []
    count = len(job['inputs'])
    while len(replies) < count:
      program_error = self._run_process(job, replies)
      if program_error is not None:
        replies += [{'error': program_error}] * (count - len(replies))
    return replies

  def _run_process(self, job, replies) -> str | None:
    """Runs inputs from len(replies) in one process, appending their replies; a
    program-wide error is returned; a killed input gets its reason and ends the process."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
      os.close(read_fd)
      _child(self.env, job, len(replies), write_fd, self.abi)
    os.close(write_fd)
    buffer, failure, program_error = b'', None, None
    deadline = time.monotonic() + job['timeout_s']
    try:
      while failure is None and program_error is None and len(replies) < len(job['inputs']):
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([read_fd], [], [], wait)[0]:
          failure = f"timeout: no output within {job['timeout_s']:g} s"
          break
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
          break  # the process ended: its status says why
        buffer += chunk
        while b'\n' in buffer and program_error is None:
          line, buffer = buffer.split(b'\n', 1)
          try:
            reply = _clean_reply(line, len(replies))
          except ValueError as e:
            failure = f'the program corrupted its reply ({e})'
            break
          if isinstance(reply, str):
            program_error = reply
          else:
            replies.append(reply)
            deadline = time.monotonic() + job['timeout_s']
        if len(buffer) > MAX_REPLY_BYTES:
          failure = 'the output is too large to be a grid'
    finally:
      os.close(read_fd)
      if failure is not None:
        os.kill(pid, signal.SIGKILL)
      _, status = os.waitpid(pid, 0)
    if program_error is None and len(replies) < len(job['inputs']):
      replies.append({'error': failure or _exit_reason(status)})
    return program_error


def _warm_up(env: restricted.Environment) -> None:
  """Runs the library once so its lazy imports happen here, not in a confined process
  (which can open no file)."""
  common = env.modules['common']
  grid = np.zeros((8, 8), dtype=int)
  grid[1:3, 1:3] = 2
  common.find_connected_components(grid, connectivity=8, monochromatic=False)
  common.object_neighbors(grid, connectivity=8)
  common.detect_objects(grid, connectivity=4, allowed_dimensions=[(2, 2)])
  common.detect_mirror_symmetry(grid)
  common.random_free_location_for_sprite(grid, grid[1:3, 1:3], padding=1)
  common.contact(object1=grid, object2=grid)
  np.array_str(grid)
  np.unique(grid, return_counts=True)


def main() -> None:
  confine.die_with_parent()
  worker = Worker()
  _warm_up(worker.env)
  gc.freeze()  # the forked processes then leave the shared pages alone
  ready = {'ready': True, 'pid': os.getpid(), 'isolation': confine.describe(worker.abi)}
  sys.stdout.write(json.dumps(ready) + '\n')
  sys.stdout.flush()
  for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.write(json.dumps({'replies': worker.run_job(job)}) + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
