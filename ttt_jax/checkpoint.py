"""Checkpoints: resumable TTT runs (orbax) and finished adapters (PEFT format).

A run checkpoint holds the stacked slot state (adapters, optimizer states,
per-slot step counts, status, job and task indices: the step count plus the
seed fix each slot's position in its data) and a small JSON of the host loop
(global step, next job, finished jobs, loss curves). The slots' examples are
rebuilt from the job list on restore, so checkpoints stay adapter-sized.

A finished adapter is written as a PEFT LoRA adapter (adapter_model.safetensors
+ adapter_config.json), loadable with `peft.PeftModel.from_pretrained` on the
base model exported by `ttt_jax.model.hf.save_hf`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, TextIO

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from safetensors.numpy import load_file, save_file

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


def drop_records_after(path: str, step: int) -> None:
  """Rewrites a log without its records of steps after `step`: what a killed run logged
  past the checkpoint it resumes from (its rerun logs those steps again)."""
  if not os.path.exists(path):
    return
  kept = [r for r in read_log(path) if r.get('step', 0) <= step]
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)


class RunCheckpointer:
  """Saves (slots pytree, host-loop JSON) every `save_every` global steps."""

  def __init__(self, directory: str, save_every: int, max_to_keep: int = 2):
    if save_every <= 0:
      raise ValueError(f'checkpoint save_every must be positive, got {save_every}')
    self.save_every = save_every
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, slots: Any, host: dict) -> None:
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
  save_file(tensors, os.path.join(directory, ADAPTER_WEIGHTS))
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
  with open(os.path.join(directory, ADAPTER_CONFIG), 'w') as f:
    json.dump(config, f, indent=2)


def load_peft_adapter(directory: str, model_config: ModelConfig) -> tuple[dict, LoraConfig]:
  """The inverse of `export_peft_adapter`: (adapter tree, LoraConfig)."""
  config_path = os.path.join(directory, ADAPTER_CONFIG)
  with open(config_path) as f:
    config = json.load(f)
  by_module = {module: name for name, module in TARGETS.items()}
  modules = config.get('target_modules')
  if not isinstance(modules, list) or any(m not in by_module for m in modules):
    raise ValueError(
        f'{config_path}: target_modules {modules!r} must be a list of ' f'{sorted(by_module)}'
    )
  targets = tuple(name for name in TARGETS if TARGETS[name] in modules)
  lora_config = LoraConfig(
      rank=int(config['r']),
      alpha=float(config['lora_alpha']),
      targets=targets,
      rslora=bool(config.get('use_rslora', False)),
  )
  tensors = load_file(os.path.join(directory, ADAPTER_WEIGHTS))
  lora = {}
  for name in targets:
    stacked = {}
    for ab in ('a', 'b'):
      keys = [_peft_key(layer, name, ab) for layer in range(model_config.num_layers)]
      missing = [k for k in keys if k not in tensors]
      if missing:
        raise ValueError(
            f'{directory}/{ADAPTER_WEIGHTS}: missing {missing[0]}' f' ({len(missing)} keys missing)'
        )
      stacked[ab] = np.stack([tensors[k].T for k in keys])
    lora[name] = stacked
  return lora, lora_config
