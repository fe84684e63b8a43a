"""Wall time of a run's stages, with the part of it JAX spent compiling.

Compile seconds come from JAX's own monitoring events (tracing, lowering and
the backend compile), so "where did the demo's minutes go" has an answer
without a profiler: `with timer.stage('ttt'): ...`, then `timer.table()`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import jax

from ttt_jax import atomic_io

# The events whose durations add up to the time spent compiling.
COMPILE_EVENTS = (
    '/jax/core/compile/jaxpr_trace_duration',
    '/jax/core/compile/jaxpr_to_mlir_module_duration',
    '/jax/core/compile/backend_compile_duration',
)
_compile_seconds = 0.0  # since the first StageTimer registered the listener
_listening = False


def _listen(event: str, duration: float, **_) -> None:
  global _compile_seconds
  if event in COMPILE_EVENTS:
    _compile_seconds += duration


def compile_seconds() -> float:
  """Seconds JAX has spent compiling in this process since the first StageTimer."""
  return _compile_seconds


class StageTimer:
  """Records (stage, wall seconds, compile seconds) in the order the stages ran;
  `on_start(name)` is told when each stage begins (a sweep's progress lines)."""

  def __init__(self, on_start: Callable[[str], None] | None = None):
    global _listening
    if not _listening:
      jax.monitoring.register_event_duration_secs_listener(_listen)
      _listening = True
    self.rows: list[dict] = []
    self.on_start = on_start

  @contextlib.contextmanager
  def stage(self, name: str):
    if self.on_start is not None:
      self.on_start(name)
    wall, compiled = time.perf_counter(), compile_seconds()
    try:
      yield
    finally:
      self.rows.append(
          {
              'stage': name,
              'wall_s': time.perf_counter() - wall,
              'compile_s': compile_seconds() - compiled,
          }
      )

  def table(self) -> str:
    lines = ['| stage | wall s | of which compiling s |', '|---|---|---|']
    lines += [f'| {r["stage"]} | {r["wall_s"]:.1f} | {r["compile_s"]:.1f} |' for r in self.rows]
    total = {k: sum(r[k] for r in self.rows) for k in ('wall_s', 'compile_s')}
    lines.append(f'| total | {total["wall_s"]:.1f} | {total["compile_s"]:.1f} |')
    return '\n'.join(lines)

  def write(self, path: str) -> None:
    atomic_io.write_json(path, self.rows, indent=1)
