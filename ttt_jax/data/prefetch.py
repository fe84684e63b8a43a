"""A PretrainStream's batches made ahead by worker processes.

On a GPU, stage 1 of a small model is bound by the host: augmenting and
tokenizing a batch costs ~20-40 ms of one core, the step itself ~10 ms.
`batches(stream, start, stop, workers)` yields the same `stream.batch(step)`
(pure in (seed, step)) in order, made by `workers` spawned processes one
bucket (`bucket_steps` batches, sorted by length together) at a time. The
workers run JAX on the CPU only (the stream's few jitted grid ops): a worker
on the GPU would take its memory.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import pickle
from collections.abc import Iterator

from absl import logging

from ttt_jax.data.pretrain_data import PretrainStream

_STREAM: PretrainStream | None = None  # a worker's copy


def _init(pickled: bytes) -> None:
  global _STREAM
  _STREAM = pickle.loads(pickled)


def _bucket(bucket: int) -> list[dict]:
  n = _STREAM.cfg.bucket_steps
  return [_STREAM.batch(step) for step in range(bucket * n, (bucket + 1) * n)]


@contextlib.contextmanager
def _cpu_only_children():
  """Processes spawned inside inherit JAX_PLATFORMS=cpu; this one keeps its backend."""
  before = os.environ.get('JAX_PLATFORMS')
  os.environ['JAX_PLATFORMS'] = 'cpu'
  try:
    yield
  finally:
    if before is None:
      del os.environ['JAX_PLATFORMS']
    else:
      os.environ['JAX_PLATFORMS'] = before


def batches(stream: PretrainStream, start: int, stop: int, workers: int = 0) -> Iterator[dict]:
  """stream.batch(step) for step in [start, stop): here when workers == 0, else by `workers`
  processes, at most 2 buckets per worker ahead of the consumer."""
  if workers <= 0:
    yield from (stream.batch(step) for step in range(start, stop))
    return
  n = stream.cfg.bucket_steps
  todo = iter(range(start // n, -(-stop // n)))
  try:
    with _cpu_only_children():
      pool = multiprocessing.get_context('spawn').Pool(workers, _init, (pickle.dumps(stream),))
  except OSError as e:  # e.g. no /dev/shm for the pool's locks: slower, not wrong
    logging.warning('no data workers (%s): making batches in this process', e)
    yield from batches(stream, start, stop, 0)
    return
  try:
    pending = collections.deque(
        (b, pool.apply_async(_bucket, (b,))) for b in itertools.islice(todo, 2 * workers)
    )
    while pending:
      bucket, result = pending.popleft()
      made = result.get()
      pending.extend((b, pool.apply_async(_bucket, (b,))) for b in itertools.islice(todo, 1))
      for step, batch in zip(range(bucket * n, (bucket + 1) * n), made):
        if start <= step < stop:
          yield batch
  finally:
    pool.terminate()
