"""HF checkpoints both ways (ours -> transformers, sharded -> ours), vocab shrink, bad dirs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig, RopeScaling

forward = jax.jit(llama.forward, static_argnames='config')

SMALL = ModelConfig(
    vocab_size=40,
    hidden_size=64,
    intermediate_size=96,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10_000.0,
    rope_scaling=RopeScaling(8.0, 1.0, 4.0, 16),
    max_position_embeddings=128,
)


def _random(config, seed=0):
  params = llama.init_params(config, jax.random.key(seed), std=0.1)
  norms = lambda x, k: (
      x * jax.random.uniform(jax.random.key(k), x.shape, minval=0.5, maxval=1.5)
  ).astype(x.dtype)
  params['layers']['attn_norm'] = norms(params['layers']['attn_norm'], seed + 1)
  params['final_norm'] = norms(params['final_norm'], seed + 2)
  return params


@pytest.mark.parametrize('tied', [False, True])
def test_save_hf_loads_in_transformers_with_same_logits(tmp_path, hf_logits, tied):
  config = SMALL.replace(tie_word_embeddings=tied)
  params = _random(config)
  hf.save_hf(str(tmp_path), config, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), dtype=torch.float32, attn_implementation='eager'
  ).eval()
  assert model.config.tie_word_embeddings == tied
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 40)).astype(np.int32)
  ours, _ = forward(params, tokens, config)
  np.testing.assert_allclose(ours, hf_logits(model, tokens), atol=1e-4, rtol=0)

  config_back, params_back = hf.load_hf(str(tmp_path))
  assert config_back == config
  jax.tree.map(np.testing.assert_array_equal, params_back, params)


def test_sharded_save_round_trips(tmp_path, hf_logits):
  params = _random(SMALL)
  hf.save_hf(str(tmp_path), SMALL, params, max_shard_bytes=60_000)
  files = sorted(os.listdir(tmp_path))
  shards = [f for f in files if f.startswith('model-') and f.endswith('.safetensors')]
  assert len(shards) > 2 and hf.INDEX_FILE in files and hf.SINGLE_FILE not in files
  assert shards[0] == f'model-00001-of-{len(shards):05d}.safetensors'
  index = json.load(open(tmp_path / hf.INDEX_FILE))
  assert set(index['weight_map'].values()) == set(shards)

  config, loaded = hf.load_hf(str(tmp_path))
  assert config == SMALL
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  tokens = np.arange(12, dtype=np.int32)[None] % SMALL.vocab_size
  np.testing.assert_allclose(forward(params, tokens, SMALL)[0], hf_logits(model, tokens), atol=1e-4)


def test_bfloat16_params_keep_their_dtype(tmp_path):
  config = SMALL.replace(param_dtype='bfloat16')
  params = _random(config)
  hf.save_hf(str(tmp_path), config, params)
  assert json.load(open(tmp_path / 'config.json'))['torch_dtype'] == 'bfloat16'
  loaded_config, loaded = hf.load_hf(str(tmp_path), param_dtype='bfloat16')
  assert loaded['layers']['q'].dtype == jnp.bfloat16
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  # ... and upcast on request.
  _, as_f32 = hf.load_hf(str(tmp_path))
  assert as_f32['embed'].dtype == jnp.float32


@pytest.mark.parametrize('tied', [False, True])
def test_shrink_vocab_keeps_logits_of_kept_tokens(tied):
  config = SMALL.replace(tie_word_embeddings=tied)
  params = _random(config)
  keep = [7, 3, 21, 0, 39, 12]
  small_config, small_params = hf.shrink_vocab(config, params, keep)
  assert small_config.vocab_size == 6 and small_config.tie_word_embeddings == tied
  assert ('lm_head' in small_params) != tied
  old_tokens = np.asarray([[7, 3, 3, 21, 0, 39, 12, 7]], np.int32)
  new_tokens = np.asarray([[keep.index(t) for t in old_tokens[0]]], np.int32)
  full, _ = forward(params, old_tokens, config)
  shrunk, _ = forward(small_params, new_tokens, small_config)
  np.testing.assert_allclose(shrunk, np.asarray(full)[..., keep], atol=1e-5)


@pytest.mark.parametrize(
    'keep, message',
    [([1, 1, 2], 'repeated'), ([0, 40], r'\[0, 40\)'), ([], 'non-empty'), ([[1, 2]], '1-D')],
)
def test_shrink_vocab_rejects_bad_ids(keep, message):
  with pytest.raises(ValueError, match=message):
    hf.shrink_vocab(SMALL, _random(SMALL), keep)


# --- bad checkpoint directories ----------------------------------------------------------


@pytest.fixture
def checkpoint(hf_checkpoint):
  """(directory, tensors): a transformers-saved checkpoint and its tensors as numpy."""
  directory, _ = hf_checkpoint()
  path = os.path.join(directory, hf.SINGLE_FILE)
  return directory, dict(safetensors.numpy.load_file(path))


def _rewrite(directory, tensors):
  safetensors.numpy.save_file(
      tensors, os.path.join(directory, hf.SINGLE_FILE), metadata={'format': 'pt'}
  )


def test_missing_tensor_is_named(checkpoint):
  directory, tensors = checkpoint
  del tensors['model.layers.1.mlp.up_proj.weight']
  _rewrite(directory, tensors)
  with pytest.raises(ValueError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
    hf.load_hf(directory)


def test_unexpected_tensor_is_named_with_its_file(checkpoint):
  directory, tensors = checkpoint
  tensors['model.layers.2.mlp.up_proj.weight'] = tensors['model.layers.1.mlp.up_proj.weight']
  _rewrite(directory, tensors)
  with pytest.raises(
      ValueError,
      match=r'model\.safetensors: unexpected tensor ' r"'model\.layers\.2\.mlp\.up_proj\.weight'",
  ):
    hf.load_hf(directory)


def test_misshaped_tensor_is_named_with_its_file(checkpoint):
  directory, tensors = checkpoint
  tensors['model.layers.0.self_attn.k_proj.weight'] = np.zeros((64, 64), np.float32)
  _rewrite(directory, tensors)
  with pytest.raises(
      ValueError,
      match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn"
      r"\.k_proj\.weight' has shape \(64, 64\), expected \(32, 64\)",
  ):
    hf.load_hf(directory)


def test_missing_files_are_named(checkpoint, tmp_path):
  directory, _ = checkpoint
  os.remove(os.path.join(directory, hf.SINGLE_FILE))
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    hf.load_hf(directory)
  os.remove(os.path.join(directory, 'config.json'))
  with pytest.raises(FileNotFoundError, match='config.json'):
    hf.load_hf(directory)

  params = _random(SMALL)
  hf.save_hf(str(tmp_path / 'sharded'), SMALL, params, max_shard_bytes=60_000)
  second = sorted(f for f in os.listdir(tmp_path / 'sharded') if f.startswith('model-'))[1]
  os.remove(tmp_path / 'sharded' / second)
  with pytest.raises(FileNotFoundError, match=second):
    hf.load_hf(str(tmp_path / 'sharded'))


def test_bad_config_field_names_the_file(checkpoint):
  directory, _ = checkpoint
  config_path = os.path.join(directory, 'config.json')
  hf_config = json.load(open(config_path))
  json.dump({**hf_config, 'hidden_act': 'gelu'}, open(config_path, 'w'))
  with pytest.raises(ValueError, match=r'config\.json: .*hidden_act'):
    hf.load_hf(directory)


def test_tied_checkpoint_with_a_different_head_is_rejected(hf_checkpoint):
  directory, _ = hf_checkpoint(tie_word_embeddings=True)
  path = os.path.join(directory, hf.SINGLE_FILE)
  tensors = dict(safetensors.numpy.load_file(path))
  tensors['lm_head.weight'] = tensors['model.embed_tokens.weight'].copy()
  _rewrite(directory, tensors)
  hf.load_hf(directory)  # an identical stored head is fine
  tensors['lm_head.weight'] = tensors['lm_head.weight'] + 1
  _rewrite(directory, tensors)
  with pytest.raises(ValueError, match="'lm_head.weight' differs"):
    hf.load_hf(directory)
