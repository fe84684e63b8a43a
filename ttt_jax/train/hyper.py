"""An in-step sweep: jobs that differ in the per-job knobs that keep the step's shapes
(`ttt_config.Hyper`) train side by side in one jitted step.

A `Hyper` is one job's values; `TTTConfig.hyper()` gives the config's own (the default of
every job) and `hyper.of(ttt_config)` the config of that job trained alone. In the step
each slot carries its lr, LoRA scale and warmup as arrays, its weight decay in its
optimizer state and its step cap in its step count (slots.fresh_slot). The adapters of
all slots have the largest rank among the run's jobs (`slot_config`); a job of a smaller
rank is zero-padded to it, and the padding stays exactly zero through training (its
gradients, Adam moments and decay are 0), so it trains as it would alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence

from ttt_jax.train.ttt_config import Hyper, TTTConfig


def slot_config(ttt_config: TTTConfig, hypers: Iterable[Hyper]) -> TTTConfig:
  """The recipe the step and the slots are compiled for: `ttt_config` with the largest
  rank of `hypers` (none: its own) and neutral values of the other knobs, which the step
  reads from the slots; runs that differ only in them share their compilations."""
  rank = max((h.rank for h in hypers), default=ttt_config.lora.rank)
  neutral = Hyper(lr=0.0, alpha=1.0, rank=rank, weight_decay=0.0, warmup_frac=0.0, max_steps=None)
  return neutral.of(ttt_config)


def grid(ttt_config: TTTConfig, axes: Mapping[str, Sequence]) -> dict[str, Hyper]:
  """{name: Hyper} for every combination of the `axes` ({Hyper field: values}; no values:
  the config's), in product order. A name joins f'{field}_{value:g}' over the axes with
  more than one value ('lr_5e-05-rank_16'); '' when there is one combination."""
  unknown = set(axes) - {f.name for f in dataclasses.fields(Hyper)}
  if unknown:
    raise ValueError(f'unknown sweep axes {sorted(unknown)}')
  default = ttt_config.hyper()
  values = {name: tuple(v) or (getattr(default, name),) for name, v in axes.items()}
  for name, v in values.items():
    if len(set(v)) != len(v):
      raise ValueError(f'the {name} axis repeats a value: {v}')
  swept = [name for name, v in values.items() if len(v) > 1]
  named = {}
  for combination in itertools.product(*values.values()):
    hyper = ttt_config.hyper(**dict(zip(values, combination)))
    name = '-'.join(f'{n}_{value_str(getattr(hyper, n))}' for n in swept)
    if name in named:
      raise ValueError(f'two jobs would share the adapter name {name!r}: {hyper}, {named[name]}')
    named[name] = hyper
  return named


def value_str(value) -> str:
  """A knob's value in an adapter name or a label: '%g', or 'none' (no step cap)."""
  return 'none' if value is None else f'{value:g}'
