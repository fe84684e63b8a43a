"""LoRA: B = 0 is the base model, merged == unmerged, peft's init and peft's forward."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch

from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS, LoraConfig, init_lora, merge_lora, projection_shapes

forward = jax.jit(llama.forward, static_argnames=('config', 'lora_config'))
ALL = tuple(TARGETS)


@pytest.fixture(scope='module')
def tiny():
  config = ModelConfig.preset('tiny', num_layers=2)
  return config, llama.init_params(config, jax.random.key(0), std=0.1)


def _nonzero_b(lora, seed=1, std=0.05):
  keys = iter(jax.random.split(jax.random.key(seed), len(lora)))
  return {
      name: {'a': ab['a'], 'b': std * jax.random.normal(next(keys), ab['b'].shape)}
      for name, ab in lora.items()
  }


def test_zero_b_gives_base_logits_bitwise(tiny):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(2), (2, 24), 0, config.vocab_size)
  lora_config = LoraConfig(rank=8, targets=ALL)
  lora = init_lora(jax.random.key(3), config, lora_config)
  base, _ = forward(params, tokens, config)
  adapted, _ = forward(params, tokens, config, lora=lora, lora_config=lora_config)
  np.testing.assert_array_equal(adapted, base)


@pytest.mark.parametrize(
    'lora_config',
    [LoraConfig(rank=4, alpha=16.0), LoraConfig(rank=8, alpha=4.0, targets=ALL, rslora=True)],
)
def test_merged_equals_unmerged(tiny, lora_config):
  config, params = tiny
  tokens = jax.random.randint(jax.random.key(4), (2, 24), 0, config.vocab_size)
  lora = _nonzero_b(init_lora(jax.random.key(5), config, lora_config))
  unmerged, _ = forward(params, tokens, config, lora=lora, lora_config=lora_config)
  merged, _ = forward(merge_lora(params, lora, lora_config), tokens, config)
  base, _ = forward(params, tokens, config)
  assert np.abs(unmerged - base).max() > 1e-2  # the adapter matters...
  np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=0)  # ...and merges exactly


def test_init_matches_peft_statistics(tiny, hf_checkpoint):
  config, _ = tiny
  lora_config = LoraConfig(rank=16, targets=ALL)
  lora = init_lora(jax.random.key(6), config, lora_config)
  _, model = hf_checkpoint(
      hidden_size=128,
      intermediate_size=512,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=32,
  )
  torch.manual_seed(0)
  peft_model = peft.get_peft_model(
      model,
      peft.LoraConfig(
          r=16, lora_alpha=16, target_modules=[TARGETS[t] for t in ALL], lora_dropout=0.0
      ),
  )

  for name, (fan_in, fan_out) in projection_shapes(config).items():
    a, b = np.asarray(lora[name]['a']), np.asarray(lora[name]['b'])
    assert a.shape == (config.num_layers, fan_in, 16) and b.shape == (
        config.num_layers,
        16,
        fan_out,
    )
    assert not b.any()
    peft_layer = peft_model.base_model.model.model.layers[0]
    module = getattr(peft_layer.self_attn if name in 'qkvo' else peft_layer.mlp, TARGETS[name])
    peft_a = module.lora_A['default'].weight.detach().numpy()  # [r, in]
    assert peft_a.shape == a.shape[1:][::-1]
    assert not module.lora_B['default'].weight.detach().numpy().any()
    bound = 1 / math.sqrt(fan_in)
    for sample in (a, peft_a):  # U(-bound, bound): the edges reached, std bound/sqrt(3)
      assert np.abs(sample).max() <= bound
      assert np.abs(sample).max() > 0.95 * bound
      np.testing.assert_allclose(sample.std(), bound / math.sqrt(3), rtol=0.1)
      assert abs(sample.mean()) < 0.1 * bound


def test_task_axis_gives_each_task_its_own_adapter(tiny):
  config, params = tiny
  lora_config = LoraConfig(rank=4, targets=('q', 'v'))
  stacked = init_lora(jax.random.key(7), config, lora_config, num_tasks=3)
  assert stacked['q']['a'].shape == (3, config.num_layers, 128, 4)
  assert stacked['v']['b'].shape == (3, config.num_layers, 4, 64)
  assert not np.allclose(stacked['q']['a'][0], stacked['q']['a'][1])

  stacked = _nonzero_b(stacked)
  tokens_TBS = jax.random.randint(jax.random.key(8), (3, 2, 16), 0, config.vocab_size)
  per_task = jax.vmap(
      lambda lora, tokens: llama.forward(
          params, tokens, config, lora=lora, lora_config=lora_config
      )[0]
  )(stacked, tokens_TBS)
  for t in range(3):
    one = jax.tree.map(lambda x: x[t], stacked)
    np.testing.assert_allclose(
        per_task[t],
        forward(params, tokens_TBS[t], config, lora=one, lora_config=lora_config)[0],
        atol=1e-5,
    )


@pytest.mark.parametrize(
    'targets, rslora', [(('q', 'v', 'o', 'gate', 'up', 'down'), False), (ALL, True)]
)
def test_forward_matches_peft(hf_checkpoint, hf_logits, targets, rslora):
  directory, model = hf_checkpoint(
      rope_scaling=dict(
          rope_type='llama3',
          factor=8.0,
          low_freq_factor=1.0,
          high_freq_factor=4.0,
          original_max_position_embeddings=16,
      )
  )
  config, params = hf.load_hf(directory)
  lora_config = LoraConfig(rank=4, alpha=12.0, targets=targets, rslora=rslora)
  lora = _nonzero_b(init_lora(jax.random.key(9), config, lora_config), std=0.3)

  peft_model = peft.get_peft_model(
      model,
      peft.LoraConfig(
          r=4,
          lora_alpha=12.0,
          target_modules=[TARGETS[t] for t in targets],
          lora_dropout=0.0,
          use_rslora=rslora,
      ),
  ).eval()
  by_module = {module: ours for ours, module in TARGETS.items()}
  copied = 0
  with torch.no_grad():
    for path, module in peft_model.named_modules():
      match = re.search(r'layers\.(\d+)\.\w+\.(\w+_proj)$', path)
      if match and hasattr(module, 'lora_A'):
        layer, name = int(match[1]), by_module[match[2]]
        for key, weights in (('a', module.lora_A), ('b', module.lora_B)):  # torch is [out, in]
          weights['default'].weight.copy_(torch.tensor(np.asarray(lora[name][key][layer]).T))
        copied += 1
  assert copied == len(targets) * config.num_layers

  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 40)).astype(np.int32)
  ours, _ = forward(params, tokens, config, lora=lora, lora_config=lora_config)
  reference = hf_logits(peft_model, tokens)
  with peft_model.disable_adapter():
    assert np.abs(reference - hf_logits(peft_model, tokens)).max() > 1e-2  # the adapter matters
  np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_scale_and_validation(tiny):
  assert LoraConfig(rank=8, alpha=16.0).scale == 2.0
  assert LoraConfig(rank=16, alpha=16.0, rslora=True).scale == 4.0
  for bad, field in [
      (dict(rank=0), 'rank'),
      (dict(targets=('q', 'x')), 'targets'),
      (dict(targets=['q']), 'targets'),
      (dict(targets=('q', 'q')), 'targets'),
  ]:
    with pytest.raises(ValueError, match=field):
      LoraConfig(**bad)

  config, params = tiny
  lora_config = LoraConfig(rank=4, targets=('q',))
  tokens = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match='without lora_config'):
    llama.forward(params, tokens, config, lora=init_lora(jax.random.key(0), config, lora_config))
  stacked = init_lora(jax.random.key(0), config, lora_config, num_tasks=2)
  with pytest.raises(ValueError, match=r"lora\['q'\] shapes"):
    llama.forward(params, tokens, config, lora=stacked, lora_config=lora_config)
  with pytest.raises(ValueError, match='merge one task'):
    merge_lora(params, stacked, lora_config)
  with pytest.raises(ValueError, match="'q'"):
    llama.forward(
        params,
        tokens,
        config,
        lora=init_lora(jax.random.key(0), config, lora_config),
        lora_config=LoraConfig(rank=4, targets=('v',)),
    )
