"""Checkpoints: resumable TTT runs (orbax) and finished adapters (PEFT format).

A run checkpoint holds the stacked slot state (adapters, optimizer states,
per-slot step counts, status, job and task indices: the step count plus the
seed fix each slot's position in its data) and a small JSON of the host loop
(global step, next job, finished jobs, loss curves). The slots' examples are
rebuilt from the job list on restore, so checkpoints stay adapter-sized.

A step orbax cannot restore (torn by a kill or a full disk, or damaged
since) is skipped with a warning and set aside (`restore_latest`): the run
resumes from the step before, or starts afresh.

A finished adapter is written as a PEFT LoRA adapter (adapter_model.safetensors
+ adapter_config.json, each written atomically), loadable with
`peft.PeftModel.from_pretrained` on the base model exported by
`ttt_jax.model.hf.save_hf`. Reading one back checks it against the base
model; a missing, truncated or mismatched file raises a DamagedFileError
naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from absl import logging
from jax.experimental import multihost_utils

from ttt_jax import atomic_io, checked_read
from ttt_jax.errors import DamagedFileError
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS, LoraConfig, projection_shapes

ADAPTER_WEIGHTS = 'adapter_model.safetensors'
ADAPTER_CONFIG = 'adapter_config.json'
_MODULE_GROUP = {
    'q': 'self_attn',
    'k': 'self_attn',
    'v': 'self_attn',
    'o': 'self_attn',
    'gate': 'mlp',
    'up': 'mlp',
    'down': 'mlp',
}


# ----------------------------------------------------------------------------
# Resumable runs


def read_log(path: str) -> list[dict]:
  """The records of a JSON-lines log that a run appends to as work finishes.

  Read only, so every process of a multi-host run sees the same records. A
  line it cannot parse (one torn by a kill mid-write) is skipped with a
  warning: the work it described is simply redone.
  """
  return list(iter_log(path))


def iter_log(path: str) -> Iterator[dict]:
  """`read_log` one record at a time (a log too large to hold in memory)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          logging.warning(
              '%s:%d: skipping an unreadable line (an interrupted write?): %s', path, number, e
          )


def open_log(path: str) -> TextIO:
  """`path` opened for appending records; a torn last line left by a kill is ended
  first, so the next record starts a line of its own."""
  torn = False
  if os.path.exists(path) and os.path.getsize(path):
    with open(path, 'rb') as f:
      f.seek(-1, os.SEEK_END)
      torn = f.read(1) != b'\n'
  out = open(path, 'a')  # pylint: disable=consider-using-with (the caller closes it)
  if torn:
    out.write('\n')
  return out


def append_record(path: str, record: dict) -> None:
  """Appends `record` as one JSON line (after ending a torn last line). A full disk raises
  a DiskFullError naming `path`; the complete lines stay, a torn one is skipped on read."""
  with atomic_io.reporting_full_disk(path, kept='its complete lines are kept'):
    with open_log(path) as f:
      f.write(json.dumps(record) + '\n')


def write_records(path: str, records: list[dict]) -> None:
  """`path` holds exactly `records`, one JSON line each, written atomically."""
  atomic_io.write_text(path, ''.join(json.dumps(r) + '\n' for r in records))


def drop_records_after(path: str, step: int) -> None:
  """Rewrites a log without its records of steps after `step`: what a killed run logged
  past the checkpoint it resumes from (its rerun logs those steps again)."""
  if os.path.exists(path):
    write_records(path, [r for r in read_log(path) if r.get('step', 0) <= step])


def _shapes(tree: Any) -> list[tuple]:
  return sorted((tuple(x.shape), str(np.dtype(x.dtype))) for x in jax.tree.leaves(tree))


class RunCheckpointer:
  """Saves (slots pytree, host-loop JSON) every `save_every` global steps."""

  def __init__(self, directory: str, save_every: int, max_to_keep: int = 2):
    if save_every <= 0:
      raise ValueError(f'checkpoint save_every must be positive, got {save_every}')
    self.save_every = save_every
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        # A save killed before orbax renamed it into place leaves a tmp directory: removed.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        ),
        item_handlers={
            'slots': ocp.StandardCheckpointHandler(),
            'host': ocp.JsonCheckpointHandler(),
        },
    )

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, slots: Any, host: dict) -> None:
    """Saves step `step`; a full disk raises DiskFullError (the earlier steps stay)."""
    kept = 'the earlier checkpoints are intact'
    with atomic_io.reporting_full_disk(os.path.join(self.directory, str(step)), kept=kept):
      self.manager.save(
          step,
          args=ocp.args.Composite(slots=ocp.args.StandardSave(slots), host=ocp.args.JsonSave(host)),
      )
      # The next train step donates the slot buffers: let orbax finish reading them.
      self.manager.wait_until_finished()

  def restore(self, step: int, like_slots: Any) -> tuple[Any, dict]:
    """Restores onto the shapes, dtypes and shardings of `like_slots`."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like_slots
    )
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            slots=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()
        ),
    )
    return restored['slots'], restored['host']

  def restore_latest(
      self, like_slots: Any, check_host: Callable[[int, dict], None] | None = None
  ) -> tuple[int, Any, dict] | None:
    """(step, slots, host) of the newest step that restores onto `like_slots`; None when
    none does (the run starts afresh).

    A step orbax cannot read (a file of it truncated, emptied or missing: a kill or a full
    disk mid-write, or damage since) is skipped with a warning and set aside as
    `torn_<step>` (so the rerun can save that step again), and the step before is tried.
    A readable step that holds other shapes than `like_slots`, or whose host JSON
    `check_host(step, host)` refuses, is another run's: that raises, nothing is set aside.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved = _shapes(self.manager.item_metadata(step)['slots'])
        if not saved:
          raise ValueError('no array metadata')
        host = self.manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except (orbax raises many kinds)
        self._set_aside(step, e)
        continue
      if saved != _shapes(like_slots):
        raise ValueError(
            f'{self.directory}: checkpoint step {step} is of a different run: it holds other '
            'array shapes (another model, config or slot count?); use a fresh workdir'
        )
      if check_host is not None:
        try:
          check_host(step, host['host'])
        except ValueError as e:
          raise ValueError(f'{self.directory}: {e}') from None
      try:
        slots, host = self.restore(step, like_slots)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      return step, slots, host
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Renames an unreadable step to torn_<step> (kept for a look, out of orbax's way)."""
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, f'torn_{step}')
    reason = (
        str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    )
    logging.warning(
        'checkpoint step %d in %s cannot be restored (%s: %s); set aside as %s, '
        'resuming from the step before it',
        step,
        self.directory,
        type(error).__name__,
        reason,
        target,
    )
    if jax.process_index() == 0:
      if os.path.exists(target):
        shutil.rmtree(target)
      os.replace(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside torn checkpoint {step}')
    self.manager.reload()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# ----------------------------------------------------------------------------
# PEFT adapters


def _peft_key(layer: int, name: str, ab: str) -> str:
  module = f'{_MODULE_GROUP[name]}.{TARGETS[name]}'
  return f'base_model.model.model.layers.{layer}.{module}.lora_{ab.upper()}.weight'


def export_peft_adapter(
    directory: str,
    adapter: Any,
    lora_config: LoraConfig,
    model_config: ModelConfig,
    base_model_name_or_path: str | None = None,
) -> None:
  """Writes one task's adapter ({'q': {'a': [L, in, r], 'b': [L, r, out]}, ...})
  as a PEFT LoRA adapter: lora_A.weight [r, in], lora_B.weight [out, r]."""
  shapes = projection_shapes(model_config)
  tensors = {}
  for name, ab in adapter.items():
    if name not in lora_config.targets:
      raise ValueError(
          f'export_peft_adapter: adapter has {name!r}, not in '
          f'LoraConfig.targets {lora_config.targets}'
      )
    a, b = np.asarray(ab['a'], np.float32), np.asarray(ab['b'], np.float32)
    fan_in, fan_out = shapes[name]
    want_a = (model_config.num_layers, fan_in, lora_config.rank)
    want_b = (model_config.num_layers, lora_config.rank, fan_out)
    if a.shape != want_a or b.shape != want_b:
      raise ValueError(
          f'export_peft_adapter: lora[{name!r}] shapes a {a.shape}, b {b.shape}; '
          f'expected {want_a}, {want_b} (one task, not a stack)'
      )
    for layer in range(model_config.num_layers):
      tensors[_peft_key(layer, name, 'a')] = np.ascontiguousarray(a[layer].T)
      tensors[_peft_key(layer, name, 'b')] = np.ascontiguousarray(b[layer].T)
  os.makedirs(directory, exist_ok=True)
  atomic_io.write_bytes(os.path.join(directory, ADAPTER_WEIGHTS), safetensors.numpy.save(tensors))
  config = {
      'peft_type': 'LORA',
      'task_type': 'CAUSAL_LM',
      'base_model_name_or_path': base_model_name_or_path,
      'r': lora_config.rank,
      'lora_alpha': lora_config.alpha,
      'target_modules': sorted(TARGETS[name] for name in lora_config.targets),
      'use_rslora': lora_config.rslora,
      'lora_dropout': 0.0,
      'bias': 'none',
      'fan_in_fan_out': False,
      'inference_mode': True,
      'init_lora_weights': True,
  }
  atomic_io.write_json(os.path.join(directory, ADAPTER_CONFIG), config, indent=2)


def _config_field(config: Any, path: str, field: str, kinds: tuple[type, ...], what: str):
  if field not in config:
    raise DamagedFileError(path, f'field {field!r} is missing')
  value = config[field]
  if isinstance(value, bool) or not isinstance(value, kinds):
    raise DamagedFileError(path, f'field {field!r} is {value!r}, not {what}')
  return value


def _read_lora_config(path: str) -> LoraConfig:
  config = checked_read.read_json_object(path)
  by_module = {module: name for name, module in TARGETS.items()}
  modules = _config_field(config, path, 'target_modules', (list,), 'a list of module names')
  if any(m not in by_module for m in modules):
    raise DamagedFileError(
        path, f'field target_modules {modules!r} must list some of {sorted(by_module)}'
    )
  try:
    return LoraConfig(
        rank=_config_field(config, path, 'r', (int,), 'an int'),
        alpha=float(_config_field(config, path, 'lora_alpha', (int, float), 'a number')),
        targets=tuple(name for name in TARGETS if TARGETS[name] in modules),
        rslora=bool(config.get('use_rslora', False)),
    )
  except ValueError as e:  # LoraConfig's own checks (a rank < 1, ...)
    raise DamagedFileError(path, str(e)) from None


def load_peft_adapter(directory: str, model_config: ModelConfig) -> tuple[dict, LoraConfig]:
  """The inverse of `export_peft_adapter`: (adapter tree, LoraConfig), float32.

  Every tensor is checked against `model_config` and the rank of adapter_config.json
  (shape, a float dtype, finite values), and no tensor may be left over: a file that
  fails raises DamagedFileError naming it and what is wrong.
  """
  config_path = os.path.join(directory, ADAPTER_CONFIG)
  weights_path = os.path.join(directory, ADAPTER_WEIGHTS)
  lora_config = _read_lora_config(config_path)
  tensors = checked_read.read_safetensors(weights_path)
  shapes = projection_shapes(model_config)
  lora, used = {}, set()
  for name in lora_config.targets:
    fan_in, fan_out = shapes[name]
    want = {'a': (lora_config.rank, fan_in), 'b': (fan_out, lora_config.rank)}
    stacked = {}
    for ab in ('a', 'b'):
      keys = [_peft_key(layer, name, ab) for layer in range(model_config.num_layers)]
      missing = [k for k in keys if k not in tensors]
      if missing:
        raise DamagedFileError(
            weights_path,
            f'tensor {missing[0]} is missing ({len(missing)} missing in all; an adapter of '
            f'a model with fewer than {model_config.num_layers} layers?)',
        )
      for key in keys:
        tensor = tensors[key]
        if tensor.shape != want[ab]:
          raise DamagedFileError(
              weights_path,
              f'tensor {key} has shape {tensor.shape}, expected {want[ab]} (rank '
              f"{lora_config.rank} of {ADAPTER_CONFIG}, the base model's {name} projection "
              f'{fan_in} -> {fan_out}): an adapter of another model or rank?',
          )
        if not jnp.issubdtype(tensor.dtype, jnp.floating):
          raise DamagedFileError(
              weights_path, f'tensor {key} has dtype {tensor.dtype}, not a float dtype'
          )
        if not np.all(np.isfinite(tensor)):
          raise DamagedFileError(weights_path, f'tensor {key} holds NaN or infinite values')
      used.update(keys)
      stacked[ab] = np.stack([tensors[k].T.astype(np.float32) for k in keys])
    lora[name] = stacked
  extra = sorted(set(tensors) - used)
  if extra:
    raise DamagedFileError(
        weights_path,
        f'unexpected tensor {extra[0]} ({len(extra)} in all) for the targets '
        f'{sorted(TARGETS[n] for n in lora_config.targets)} of {ADAPTER_CONFIG} and a '
        f'{model_config.num_layers}-layer base model',
    )
  return lora, lora_config
