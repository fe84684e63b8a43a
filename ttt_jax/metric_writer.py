"""Scalar metrics for TensorBoard: one event folder per run (workdir/tensorboard/).

The JSON-lines logs each stage writes stay the record a run resumes from;
this writer mirrors their scalars (losses, lr, grad norm, throughput,
validation and eval scores) so a sweep can be watched and compared in
TensorBoard (`tensorboard --logdir runs/`). It uses tensorboardX, which needs
no TensorFlow. Only process 0 of a multi-host run writes.
"""

from __future__ import annotations

import glob
import math
import os
import struct
from collections.abc import Mapping

import jax
import tensorboardX
from tensorboardX.proto import event_pb2

TENSORBOARD_DIR = 'tensorboard'


class MetricWriter:
  """`write(step, {'loss': 1.2, ...})`, usable as a context manager (closes the file)."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.logdir = os.path.join(workdir, TENSORBOARD_DIR)
    self._writer = tensorboardX.SummaryWriter(self.logdir) if self.enabled else None

  def write(self, step: int, scalars: Mapping[str, float | None], prefix: str = '') -> None:
    """Adds each finite scalar at `step` under `prefix/name`; None and NaN are skipped."""
    if self._writer is None:
      return
    for name, value in scalars.items():
      if value is not None and math.isfinite(float(value)):
        self._writer.add_scalar(f'{prefix}/{name}' if prefix else name, float(value), step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every event file in `logdir` (a run's tensorboard/),
  for plotting or checking a run without TensorBoard."""
  scalars: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):  # TFRecord: length, crc, payload, crc
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      payload = data[offset + 12 : offset + 12 + length]
      offset += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars
