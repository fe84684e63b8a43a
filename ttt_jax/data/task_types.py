"""The task types of ttt_jax/data: `Task`, `Pair`, the grid limits and the content hashes.

The bottom of the package: every other file of data/ may import it, and it imports
nothing of ttt_jax, so the loaders (arc.py), the generators and the token format
never import each other in a circle. `arc` re-exports all of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import numpy as np

MAX_SIDE = 30
NUM_COLORS = 10


@dataclasses.dataclass(frozen=True, eq=False)
class Pair:
  """One input/output example; `output` is None for an unsolved test pair."""

  input: np.ndarray
  output: np.ndarray | None = None

  def __iter__(self) -> Iterator[np.ndarray | None]:
    # Lets `for x, y in task.train` and `encode_task(task.train, ...)` work.
    return iter((self.input, self.output))

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Pair) and pair_hash(self) == pair_hash(other)

  def __hash__(self) -> int:
    return hash(pair_hash(self))


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """An ARC task. `source` says where it came from, for error messages."""

  id: str
  train: tuple[Pair, ...]
  test: tuple[Pair, ...]
  source: str = ''

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Task) and self.id == other.id and task_hash(self) == task_hash(other)

  def __hash__(self) -> int:
    return hash((self.id, task_hash(self)))


# ------------------------------------------------------------------- hashes


def grid_bytes(grid: np.ndarray) -> bytes:
  """Canonical bytes of a grid: its shape, then its cells as int8."""
  grid = np.asarray(grid)
  return np.asarray(grid.shape, '<u2').tobytes() + grid.astype(np.int8).tobytes()


def pair_hash(pair: Pair) -> str:
  """sha1 of input and output (a missing output hashes differently from any grid)."""
  h = hashlib.sha1(grid_bytes(pair.input))
  h.update(b'|' + (grid_bytes(pair.output) if pair.output is not None else b'-'))
  return h.hexdigest()


def task_hash(task: Task) -> str:
  """sha1 of the task's pairs, in order (the id is not part of it)."""
  h = hashlib.sha1()
  for split in (task.train, task.test):
    h.update(b'#')
    for p in split:
      h.update(pair_hash(p).encode())
  return h.hexdigest()
