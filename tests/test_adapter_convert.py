"""The published adapters' format (adapter_model.bin + adapter_config.json, as the
reference writes them) converts to ours and gives peft's logits."""

import json
import os

import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

from ttt_jax import adapter_convert, checkpoint
from ttt_jax.model import hf, llama

TINY = dict(
    vocab_size=32,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
MODULES = ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']


def _peft_model(base_dir):
  torch.manual_seed(0)
  base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).eval()
  base.save_pretrained(base_dir, safe_serialization=True)
  config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=MODULES, lora_dropout=0.0)
  model = peft.get_peft_model(base, config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'lora_B' in name:
        p.normal_(0, 0.2)  # trained-like: B != 0
  return model


def _write_reference_adapter(directory, state):
  """What the reference's test_time_train.py writes per task."""
  os.makedirs(directory, exist_ok=True)
  torch.save(state, os.path.join(directory, 'adapter_model.bin'))
  with open(os.path.join(directory, 'adapter_config.json'), 'w') as f:
    json.dump({'peft_type': 'LORA', 'r': 4, 'lora_alpha': 8, 'target_modules': MODULES}, f)


def _torchtune_names(state):
  """The same weights under torchtune's module names (attn, output_proj, w1/w2/w3, lora_a)."""
  rename = {'self_attn': 'attn', 'o_proj': 'output_proj', 'gate_proj': 'w1', 'down_proj': 'w2',
            'up_proj': 'w3', 'lora_A': 'lora_a', 'lora_B': 'lora_b'}  # fmt: skip
  out = {}
  for key, value in state.items():
    key = key.replace('base_model.model.model.', '')
    for old, new in rename.items():
      key = key.replace(old, new)
    out[key] = value
  return out


@pytest.mark.parametrize('names', ['peft', 'torchtune'])
def test_converted_adapter_gives_peft_logits(tmp_path, names):
  model = _peft_model(str(tmp_path / 'base'))
  state = peft.get_peft_model_state_dict(model)
  if names == 'torchtune':
    state = _torchtune_names(state)
  _write_reference_adapter(str(tmp_path / 'src' / 'task1'), state)
  model_config, params = hf.load_hf(str(tmp_path / 'base'))
  done, failed = adapter_convert.convert_folder(
      str(tmp_path / 'src'), str(tmp_path / 'dst'), model_config
  )
  assert done == ['task1'] and failed == {}
  lora, lora_config = checkpoint.load_peft_adapter(str(tmp_path / 'dst' / 'task1'), model_config)
  assert set(lora_config.targets) == {'q', 'v', 'o', 'gate', 'up', 'down'}
  assert (lora_config.rank, lora_config.alpha) == (4, 8.0)
  tokens = np.random.default_rng(0).integers(0, 32, (2, 10))
  ours, _ = llama.forward(
      params, jnp.asarray(tokens), model_config, lora=lora, lora_config=lora_config
  )
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens).long()).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
  base_only, _ = llama.forward(params, jnp.asarray(tokens), model_config)
  assert np.abs(np.asarray(base_only) - theirs).max() > 1e-3  # the adapter matters


def test_bad_adapters_are_named_and_the_rest_converts(tmp_path):
  model = _peft_model(str(tmp_path / 'base'))
  state = peft.get_peft_model_state_dict(model)
  model_config, _ = hf.load_hf(str(tmp_path / 'base'))
  _write_reference_adapter(str(tmp_path / 'src' / 'good'), state)
  with_head = {**state, 'base_model.model.lm_head.lora_A.weight': torch.zeros(4, 32)}
  _write_reference_adapter(str(tmp_path / 'src' / 'head'), with_head)
  no_layer1 = {k: v for k, v in state.items() if 'layers.1.self_attn.q_proj' not in k}
  _write_reference_adapter(str(tmp_path / 'src' / 'gap'), no_layer1)
  done, failed = adapter_convert.convert_folder(
      str(tmp_path / 'src'), str(tmp_path / 'dst'), model_config
  )
  assert done == ['good']
  assert 'lm_head.lora_A.weight' in failed['head'] and 'lm_head adapter' in failed['head']
  assert 'q has no lora_A/lora_B for layers [1]' in failed['gap']
