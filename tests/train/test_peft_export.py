"""A TTT adapter exported in PEFT format loads with peft onto the HF export
of the base model and gives our logits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import ttt_testlib as tl
from ttt_jax import checkpoint
from ttt_jax.model import hf, llama
from ttt_jax.model.lora import LoraConfig, init_lora


def trained_like_adapter(lora_config):
  """A fresh adapter with B made non-zero, as after training."""
  lora = init_lora(jax.random.key(1), tl.MODEL, lora_config)
  keys = iter(jax.random.split(jax.random.key(2), len(lora)))
  return {
      name: {'a': ab['a'], 'b': 0.1 * jax.random.normal(next(keys), ab['b'].shape)}
      for name, ab in lora.items()
  }


@pytest.mark.parametrize('rslora', [False, True])
def test_peft_adapter_gives_our_logits(tmp_path, rslora):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  peft = pytest.importorskip('peft')
  lora_config = LoraConfig(
      rank=4, alpha=8.0, targets=('q', 'v', 'o', 'gate', 'up', 'down'), rslora=rslora
  )
  params = tl.base_params()
  lora = trained_like_adapter(lora_config)
  hf.save_hf(str(tmp_path / 'base'), tl.MODEL, params)
  checkpoint.export_peft_adapter(
      str(tmp_path / 'adapter'),
      lora,
      lora_config,
      tl.MODEL,
      base_model_name_or_path=str(tmp_path / 'base'),
  )

  tokens = np.random.default_rng(0).integers(0, 16, (2, 12)).astype(np.int32)
  ours, _ = llama.forward(params, jnp.asarray(tokens), tl.MODEL, lora=lora, lora_config=lora_config)
  base = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / 'base'), dtype=torch.float32
  )
  model = peft.PeftModel.from_pretrained(base, str(tmp_path / 'adapter')).eval()
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens).long()).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
  # The adapter matters here: the base alone differs.
  base_only, _ = llama.forward(params, jnp.asarray(tokens), tl.MODEL)
  assert np.abs(np.asarray(base_only) - theirs).max() > 1e-3


def test_export_layout_and_round_trip(tmp_path):
  lora_config = LoraConfig(rank=4, alpha=8.0, targets=('q', 'down'))
  lora = trained_like_adapter(lora_config)
  checkpoint.export_peft_adapter(str(tmp_path), lora, lora_config, tl.MODEL)
  tensors = load_file(str(tmp_path / checkpoint.ADAPTER_WEIGHTS))
  d, f, r = tl.MODEL.hidden_size, tl.MODEL.intermediate_size, 4
  assert tensors['base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight'].shape == (r, d)
  assert tensors['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight'].shape == (d, r)
  assert len(tensors) == 2 * 2 * tl.MODEL.num_layers
  config = json.loads((tmp_path / checkpoint.ADAPTER_CONFIG).read_text())
  assert (
      config['peft_type'],
      config['task_type'],
      config['r'],
      config['lora_alpha'],
      config['target_modules'],
  ) == ('LORA', 'CAUSAL_LM', 4, 8.0, ['down_proj', 'q_proj'])
  loaded, loaded_config = checkpoint.load_peft_adapter(str(tmp_path), tl.MODEL)
  assert loaded_config == lora_config
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(lora), strict=True):
    np.testing.assert_array_equal(x, np.asarray(y))


def test_export_rejects_a_stacked_adapter(tmp_path):
  lora_config = LoraConfig(rank=4, targets=('q',))
  stacked = init_lora(jax.random.key(0), tl.MODEL, lora_config, num_tasks=3)
  with pytest.raises(ValueError, match=r"lora\['q'\] shapes"):
    checkpoint.export_peft_adapter(str(tmp_path), stacked, lora_config, tl.MODEL)
