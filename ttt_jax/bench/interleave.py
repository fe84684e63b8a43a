"""Fair timing of rival implementations on one machine: interleaved rounds.

A load that comes and goes (another job, a test suite) hurts torch's thread
pool more than XLA's, so timing one side after the other lets the machine's
mood pick the winner. Here every round runs each method once, in a rotated
order (ABC, BCA, CAB, ...), and ratios are taken within a round, so a slow
minute slows both sides of the ratio it lands in. Reported: the median of
each method's seconds and of its per-round ratio to a reference, with the
min-max spread of that ratio; and, for scale, the machine's measured f32
matmul peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def warm_timer(fn: Callable[[], object]) -> Callable[[], float]:
  """A callable that times one run of `fn` (until its arrays are ready), after a
  compile/warm-up run now."""
  jax.block_until_ready(fn())

  def timed() -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start

  return timed


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
  """Seconds of every run in every round; each callable times itself (after its warm-up)."""
  names = list(runs)
  seconds = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      seconds[name].append(float(runs[name]()))
  return seconds


def ratio_stats(seconds: dict[str, list[float]], reference: str) -> dict[str, dict]:
  """Per method: median seconds and the median / min / max of reference / method per round
  (> 1: the method is faster than the reference)."""
  ref = np.asarray(seconds[reference])
  stats = {}
  for name, s in seconds.items():
    ratios = ref / np.asarray(s)
    stats[name] = {
        'median_s': float(np.median(s)),
        'ratio_median': float(np.median(ratios)),
        'ratio_min': float(ratios.min()),
        'ratio_max': float(ratios.max()),
    }
  return stats


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Best FLOP/s of an f32 [n, n] x [n, n] jnp matmul on the default device."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best
