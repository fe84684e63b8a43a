"""What every benchmark does at the end: a Markdown table on stdout and the
results as JSON (with the machine they ran on), so a run can be pasted into
docs/BENCHMARKS.md as it is."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from typing import Any


def machine() -> dict:
  """Where the numbers come from: JAX devices, CPU count, versions, the env knobs."""
  import jax  # pylint: disable=import-outside-toplevel

  return {
      'device_kind': jax.devices()[0].device_kind,
      'platform': jax.devices()[0].platform,
      'num_devices': jax.device_count(),
      'num_processes': jax.process_count(),
      'cpu_count': os.cpu_count(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),  # malloc's huge pages
  }


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e5 else f'{value:.3e}'
  return '' if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
  """rows of dicts -> a Markdown table (columns default to the first row's keys)."""
  if not rows:
    return '(no rows)'
  columns = list(columns or rows[0])
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(_cell(r.get(c)) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def report(
    title: str,
    rows: Sequence[dict],
    *,
    columns: Sequence[str] | None = None,
    out: str | None = None,
    **extra,
) -> dict:
  """Prints `title` and the table; writes {title, machine, rows, **extra} to `out`."""
  result = {'title': title, 'machine': machine(), 'rows': list(rows), **extra}
  print(f'\n{title}\n')
  print(markdown_table(rows, columns))
  for key, value in extra.items():
    print(f'{key}: {value}')
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
      json.dump(result, f, indent=1, default=str)
  return result
