"""The paper's published per-task LoRA adapters -> our PEFT safetensors layout.

The reference (ekinakyurek/marc, test_time_train.py) saves each task's adapter
as `<task>/adapter_model.bin` (a torch state dict of torchtune's LoRA weights,
renamed towards PEFT's names) with an `adapter_config.json` for vLLM, whose
target_modules may list more modules than were trained. The converter reads the
weights themselves: every `layers.<i>.<module>.lora_{A,B}.weight` of the
attention (q/k/v/o, torchtune's `output_proj` too) and the MLP (PEFT names or
torchtune's w1/w2/w3), and writes adapter_model.safetensors +
adapter_config.json as `checkpoint.export_peft_adapter` does, which
`launch.predict --config.adapters_dir` loads. torch is needed to read the
pickles (loaded with weights_only=True) and nowhere else.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import logging

from ttt_jax import checkpoint
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS, LoraConfig

WEIGHTS_BIN = 'adapter_model.bin'
# torchtune module names (and the renamed ones the reference wrote) -> our projections.
_MODULES = {
    'q_proj': 'q',
    'k_proj': 'k',
    'v_proj': 'v',
    'o_proj': 'o',
    'output_proj': 'o',
    'gate_proj': 'gate',
    'w1': 'gate',
    'down_proj': 'down',
    'w2': 'down',
    'up_proj': 'up',
    'w3': 'up',
}
_KEY = re.compile(
    r'layers\.(?P<layer>\d+)\.(?:self_attn|attn|mlp)\.(?P<module>\w+?)\.lora_(?P<ab>[abAB])\.weight$'
)


def _load_state_dict(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"{path}: reading the reference's adapter_model.bin needs torch, which ttt_jax "
        "installs only as an extra: pip install 'ttt_jax[convert]' (or pip install torch)"
    ) from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.to(torch.float32).numpy() for k, v in state.items()}


def adapter_tree(state: dict[str, np.ndarray], model_config: ModelConfig, where: str):
  """{name: {'a': [L, in, r], 'b': [L, r, out]}} from a torchtune/PEFT LoRA state dict."""
  found: dict[str, dict[str, dict[int, np.ndarray]]] = {}
  for key, value in state.items():
    match = _KEY.search(key)
    if match is None or match['module'] not in _MODULES:
      raise ValueError(
          f'{where}: weight {key!r} is not a LoRA weight of an attention or MLP projection '
          '(an lm_head adapter, lora_to_output=True, has no equivalent here)'
      )
    name, ab = _MODULES[match['module']], match['ab'].lower()
    found.setdefault(name, {'a': {}, 'b': {}})[ab][int(match['layer'])] = value
  if not found:
    raise ValueError(f'{where}: no LoRA weights')
  tree, ranks = {}, set()
  for name in sorted(found, key=list(TARGETS).index):
    layers = found[name]
    missing = [
        i for i in range(model_config.num_layers) if i not in layers['a'] or i not in layers['b']
    ]
    if missing:
      raise ValueError(f'{where}: {name} has no lora_A/lora_B for layers {missing}')
    # PEFT / torchtune store A [r, in] and B [out, r]; ours are [in, r] and [r, out].
    a = np.stack([layers['a'][i].T for i in range(model_config.num_layers)])
    b = np.stack([layers['b'][i].T for i in range(model_config.num_layers)])
    tree[name] = {'a': a, 'b': b}
    ranks.add(a.shape[-1])
  if len(ranks) != 1:
    raise ValueError(f'{where}: projections have different ranks {sorted(ranks)}')
  return tree, ranks.pop()


def convert_adapter(src_dir: str, dst_dir: str, model_config: ModelConfig) -> LoraConfig:
  """One task's adapter_model.bin + adapter_config.json -> our PEFT layout in dst_dir."""
  config_path = os.path.join(src_dir, checkpoint.ADAPTER_CONFIG)
  with open(config_path) as f:
    config = json.load(f)
  for field in ('r', 'lora_alpha'):
    if field not in config:
      raise ValueError(f'{config_path}: no field {field!r}')
  where = os.path.join(src_dir, WEIGHTS_BIN)
  tree, rank = adapter_tree(_load_state_dict(where), model_config, where)
  if rank != int(config['r']):
    raise ValueError(f'{where}: weights have rank {rank}, {config_path} says r={config["r"]}')
  lora_config = LoraConfig(
      rank=rank,
      alpha=float(config['lora_alpha']),
      targets=tuple(tree),
      rslora=bool(config.get('use_rslora', False)),
  )
  checkpoint.export_peft_adapter(
      dst_dir, tree, lora_config, model_config, config.get('base_model_name_or_path')
  )
  return lora_config


def convert_folder(src: str, dst: str, model_config: ModelConfig) -> tuple[list[str], dict]:
  """Every src/<task>/adapter_model.bin -> dst/<task>/; a task that fails is logged and
  skipped. Returns (converted task ids, {task id: error})."""
  done, failed = [], {}
  for task_id in sorted(os.listdir(src)):
    task_dir = os.path.join(src, task_id)
    if not os.path.exists(os.path.join(task_dir, WEIGHTS_BIN)):
      continue
    try:
      convert_adapter(task_dir, os.path.join(dst, task_id), model_config)
      done.append(task_id)
    except (ValueError, KeyError, OSError) as e:
      logging.error('task %s: not converted: %s', task_id, e)
      failed[task_id] = str(e)
  return done, failed
