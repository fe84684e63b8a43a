"""Shared fixtures: tiny random Llama checkpoints written by transformers (the reference)."""

import numpy as np
import pytest
import torch
import transformers

# A tiny GQA Llama; tests override fields per case.
TINY_HF = dict(
    vocab_size=32,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.1,
)


def make_hf_model(seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
  """A random float32 LlamaForCausalLM with non-trivial norm weights (so norms are tested too)."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(**{**TINY_HF, **overrides}, attn_implementation='eager')
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('norm.weight'):
        p.uniform_(0.5, 1.5)
  return model


@pytest.fixture
def hf_checkpoint(tmp_path):
  """make(**overrides) -> (directory, hf_model): a model saved by `save_pretrained`."""
  counter = iter(range(1000))

  def make(seed: int = 0, **overrides):
    directory = tmp_path / f'hf_{next(counter)}'
    model = make_hf_model(seed, **overrides)
    model.save_pretrained(directory)
    return str(directory), model

  return make


def _hf_logits(model, tokens_BS, mask_BS=None, position_ids_BS=None) -> np.ndarray:
  """float32 logits of a transformers model as numpy."""
  kwargs = {}
  if mask_BS is not None:
    kwargs['attention_mask'] = torch.as_tensor(np.asarray(mask_BS), dtype=torch.long)
  if position_ids_BS is not None:
    kwargs['position_ids'] = torch.as_tensor(np.asarray(position_ids_BS), dtype=torch.long)
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(np.asarray(tokens_BS), dtype=torch.long), **kwargs)
  return out.logits.float().numpy()


@pytest.fixture
def hf_logits():
  """hf_logits(model, tokens_BS, mask_BS=None, position_ids_BS=None) -> numpy float32 logits."""
  return _hf_logits
