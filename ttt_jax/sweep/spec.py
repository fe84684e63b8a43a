"""What a sweep is: named arms, each a base config file plus `--config.X` overrides.

A sweep file, `configs/sweeps/<name>.py`, defines `get_sweep(arg) -> Sweep`:

    def get_sweep(arg=''):
      return spec.Sweep(
          config='configs/demo.py',
          overrides={'selector': 'gen:val@slice=0:40'},     # every arm
          arms=(spec.Arm('baseline'),
                spec.Arm('no_ttt', stages=('predict_base',)),
                *spec.grid({'ttt.ttt.lr': (1e-3, 3e-3), 'ttt.ttt.lora.rank': (8, 32)})),
      )

Override keys are the dotted paths a user types after `--config.`; values are
Python values, checked against the base config's types when the arm is built
(a wrong key or type names the arm and the key). Arms run the stages of
`launch.demo` (`ttt_jax/demo.py` STAGES) unless they name fewer; every arm is
compared with the arm named `baseline`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ml_collections import config_dict

from ttt_jax.demo import STAGES
from ttt_jax.errors import UserError
from ttt_jax.infer.vote import VoteConfig

BASELINE = 'baseline'
Overrides = Mapping[str, Any] | tuple[tuple[str, Any], ...]
_ARM_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.=+-]*$')  # a directory name on any system


def as_pairs(overrides: Overrides) -> tuple[tuple[str, Any], ...]:
  """Overrides as hashable (key, value) pairs: lists become tuples, as config_flags
  reads a list-valued flag."""
  items = overrides.items() if isinstance(overrides, Mapping) else overrides
  return tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items)


@dataclasses.dataclass(frozen=True)
class Resources:
  """What one arm needs on a cluster (SLURM array task) or in the local executor."""

  nodes: int = 1  # > 1: one process per node, jax.distributed from SLURM's environment
  gpus_per_node: int = 0
  cpus_per_task: int = 0  # 0: the cluster's default
  time: str = '04:00:00'  # SLURM wall-time limit of one arm
  partition: str = ''  # '' : the cluster's default

  def __post_init__(self):
    if self.nodes < 1 or self.gpus_per_node < 0 or self.cpus_per_task < 0:
      raise ValueError(f'Resources: nodes >= 1, gpus and cpus >= 0, got {self}')


@dataclasses.dataclass(frozen=True)
class Arm:
  """One experiment: overrides of the sweep's config, and the stages it runs."""

  name: str
  overrides: Overrides = ()  # a dict or (key, value) pairs; kept as pairs, in order
  stages: tuple[str, ...] = STAGES
  resources: Resources | None = None  # None: the sweep's

  def __post_init__(self):
    if not _ARM_NAME.match(self.name):
      raise ValueError(f'arm name {self.name!r}: use letters, digits and _ . = + -')
    bad = [s for s in self.stages if s not in STAGES]
    if bad or not self.stages:
      raise ValueError(f'arm {self.name}: stages {self.stages!r}, expected some of {STAGES}')
    if 'predict_ttt' in self.stages and 'ttt' not in self.stages:
      raise ValueError(f'arm {self.name}: predict_ttt needs the ttt stage')
    object.__setattr__(self, 'overrides', as_pairs(self.overrides))


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A table of arms over one base config (a config file path, `PATH[:ARG]`)."""

  config: str
  arms: tuple[Arm, ...]
  overrides: Overrides = ()  # every arm's, applied before the arm's own
  resources: Resources = Resources()
  # Each arm's headline candidates re-voted under these vote methods, nothing decoded
  # (readout_<name>/): 'oracle', 'flat', 'vanilla', 'hierarchical', 'marc', or
  # 'single_<transform>' (one transformation's candidates, e.g. 'single_transpose').
  readouts: tuple[str, ...] = ('oracle',)

  def __post_init__(self):
    names = [a.name for a in self.arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f'sweep: arm names repeat: {duplicates}')
    if BASELINE not in names:
      raise ValueError(f'sweep: no arm named {BASELINE!r} (every arm is compared with it)')
    object.__setattr__(self, 'arms', tuple(self.arms))
    object.__setattr__(self, 'overrides', as_pairs(self.overrides))
    object.__setattr__(self, 'readouts', tuple(self.readouts))
    for name in self.readouts:
      readout_vote(VoteConfig(), name)  # raises on an unknown method or transform

  def arm(self, name: str) -> Arm:
    for arm in self.arms:
      if arm.name == name:
        return arm
    raise UserError(f'--arms: no arm {name!r} in this sweep; it has {[a.name for a in self.arms]}')

  def resources_of(self, arm: Arm) -> Resources:
    return arm.resources or self.resources


def _value_name(value: Any) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def readout_vote(vote: VoteConfig, readout: str) -> VoteConfig:
  """The vote config of a readout name (Sweep.readouts)."""
  single = readout.startswith('single_')
  changes = {'method': 'single', 'transform': readout[7:]} if single else {'method': readout}
  try:
    return dataclasses.replace(vote, **changes)
  except ValueError as e:
    raise ValueError(f'readout {readout!r}: {e}') from e


def grid(axes: Mapping[str, Iterable[Any]], prefix: str = '', **arm_kwargs) -> tuple[Arm, ...]:
  """The product of override axes as arms, each named by its keys' last parts:
  `grid({'ttt.ttt.lr': (1e-3, 3e-3), 'ttt.ttt.lora.rank': (8,)})` -> arms
  'lr=0.001+rank=8' and 'lr=0.003+rank=8'."""
  keys = list(axes)
  arms = []
  for values in itertools.product(*(tuple(axes[k]) for k in keys)):
    name = '+'.join(f'{k.rsplit(".", 1)[-1]}={_value_name(v)}' for k, v in zip(keys, values))
    arms.append(Arm(prefix + name, tuple(zip(keys, values)), **arm_kwargs))
  return tuple(arms)


# ------------------------------------------------------------------ files


def _load_module(path: str, what: str):
  if not os.path.isfile(path):
    raise UserError(f'{what}: no such file {path!r}')
  spec = importlib.util.spec_from_file_location(f'_ttt_jax_{what.strip("-")}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _split_arg(path_and_arg: str) -> tuple[str, str]:
  path, _, arg = path_and_arg.partition(':')
  return path, arg


def load_sweep(path_and_arg: str) -> Sweep:
  """`get_sweep(arg)` of a sweep file `PATH[:ARG]`."""
  path, arg = _split_arg(path_and_arg)
  module = _load_module(path, '--sweep')
  if not hasattr(module, 'get_sweep'):
    raise UserError(f'--sweep: {path} defines no get_sweep(arg)')
  try:
    return module.get_sweep(arg)
  except ValueError as e:
    raise UserError(f'--sweep: {path_and_arg}: {e}') from e


def load_config(path_and_arg: str) -> config_dict.ConfigDict:
  """`get_config(arg)` of a config file `PATH[:ARG]`, as `--config=PATH:ARG` reads it."""
  path, arg = _split_arg(path_and_arg)
  return _load_module(path, 'config').get_config(arg)


def set_override(config: config_dict.ConfigDict, key: str, value: Any, where: str) -> None:
  """config.<key> = value, as `--config.<key>=value` would set it (types checked)."""
  *parents, leaf = key.split('.')
  node = config
  try:
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(leaf)
    if isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  except KeyError as e:
    raise UserError(f'{where}: --config.{key}: no such field ({e} unknown)') from e
  except TypeError as e:
    raise UserError(f'{where}: --config.{key}={value!r}: {e}') from e


def arm_config(sweep: Sweep, arm: Arm) -> config_dict.ConfigDict:
  """The arm's whole config: the base file, the sweep's overrides, then the arm's."""
  config = load_config(sweep.config)
  for source, overrides in (('sweep', sweep.overrides), (f'arm {arm.name}', arm.overrides)):
    for key, value in overrides:
      set_override(config, key, value, source)
  return config
