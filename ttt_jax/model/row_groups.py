"""Inference forwards over many rows (prefill, scoring) run in groups of rows on a CPU.

One pass over B x S tokens materialises [B*S, F] MLP activations and [B, H, Q, S]
score blocks; past a few thousand tokens those fall out of the CPU's caches (and
XLA:CPU's per-call buffers are page-faulted in anew), so the same FLOPs run slower:
a 16 x 800 prefill of the tiny model took 0.44 s in one pass and 0.33 s as 8
groups of 2 rows (docs/BENCHMARKS.md). Rows never see each other, so grouping
changes no result. An accelerator wants the whole batch at once: no groups there.
"""

from __future__ import annotations

import jax

CPU_GROUP_TOKENS = 2048  # tokens per group on a CPU (1k-4k measured alike)


def rows_per_group(batch: int, seq_len: int, max_tokens: int | None = None) -> int:
  """Rows per group: the largest divisor of `batch` whose group holds at most `max_tokens`
  tokens (at least one row). `max_tokens` None: CPU_GROUP_TOKENS on a CPU, else the
  whole batch; 0: the whole batch."""
  if max_tokens is None:
    max_tokens = CPU_GROUP_TOKENS if jax.default_backend() == 'cpu' else 0
  if max_tokens <= 0 or batch * seq_len <= max_tokens:
    return batch
  rows = max(1, min(batch, max_tokens // max(seq_len, 1)))
  while batch % rows:
    rows -= 1
  return rows


def map_rows(fn, rows: int, *arrays_B):
  """fn(*arrays) over consecutive groups of `rows` rows of the [B, ...] arrays (a None
  passes through as None), its outputs put back together along B: `lax.map`, so one
  group's buffers are live at a time."""
  batch = next(x.shape[0] for x in arrays_B if x is not None)
  if rows >= batch:
    return fn(*arrays_B)
  split = lambda x: None if x is None else x.reshape((batch // rows, rows) + x.shape[1:])
  out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays_B))
  return jax.tree.map(lambda y: y.reshape((batch,) + y.shape[2:]), out)
