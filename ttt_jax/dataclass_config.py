"""The one bridge between ml_collections ConfigDicts (configs/*.py, command-line
overrides) and the frozen dataclasses the library runs on.

`to_config_dict(SomeConfig())` is how a configs/*.py file starts from the
dataclass defaults (each default is written once, in the dataclass), then it
overrides what its recipe changes. `from_config_dict(SomeConfig, block,
where='config.ttt')` builds the dataclass back: nested dataclasses recurse,
lists become tuples, and an unknown field, a missing field or a value the
dataclass rejects is a `UserError` that names the flag (`--config.ttt.lr: ...`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ml_collections import config_dict

from ttt_jax.errors import UserError


@functools.cache
def _field_types(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _optional_of(hint) -> type | None:
  """X for an `X | None` hint of a scalar type, else None."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float, str, bool):
      return args[0]
  return None


def to_config_dict(instance) -> config_dict.ConfigDict:
  """A ConfigDict of a dataclass instance's fields; nested dataclasses become nested
  blocks, and a None of an `X | None` field a placeholder of X (overridable by flag)."""
  values = {}
  hints = _field_types(type(instance))
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    if dataclasses.is_dataclass(value):
      value = to_config_dict(value)
    elif value is None and _optional_of(hints[field.name]) is not None:
      value = config_dict.placeholder(_optional_of(hints[field.name]))
    values[field.name] = value
  return config_dict.ConfigDict(values)


def _value(hint, value, where: str):
  if dataclasses.is_dataclass(hint) and isinstance(value, (Mapping, config_dict.ConfigDict)):
    return from_config_dict(hint, value, where=where)
  if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
    return tuple(value)
  return value


def from_config_dict(cls, block, *, where: str, exclude: Iterable[str] = ()):
  """`cls(**block)` with nested dataclasses built too; `exclude` names keys of the block
  that are not fields of `cls` (read elsewhere). Errors name `where.field`."""
  values = dict(block.items()) if isinstance(block, config_dict.ConfigDict) else dict(block)
  for key in exclude:
    values.pop(key, None)
  names = [f.name for f in dataclasses.fields(cls) if f.init]
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise UserError(f'--{where}.{unknown[0]}: no such field; {cls.__name__} has {names}')
  hints = _field_types(cls)
  kwargs = {k: _value(hints[k], v, f'{where}.{k}') for k, v in values.items()}
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    if isinstance(e, UserError):
      raise
    bad = next((n for n in names if f'{cls.__name__}.{n}' in str(e) or f'{n}=' in str(e)), None)
    flag = f'{where}.{bad}' if bad else where
    raise UserError(f'--{flag}: {e}') from e
