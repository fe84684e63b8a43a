"""ModelConfig: both config.json forms, named errors for unsupported fields, presets."""

import jax
import pytest
import transformers

from ttt_jax.model.config import PRESETS, ModelConfig, RopeScaling

# meta-llama/Llama-3.2-1B config.json as published (classic form).
LLAMA32_1B_CLASSIC = {
    'architectures': ['LlamaForCausalLM'],
    'attention_bias': False,
    'attention_dropout': 0.0,
    'bos_token_id': 128000,
    'eos_token_id': 128001,
    'head_dim': 64,
    'hidden_act': 'silu',
    'hidden_size': 2048,
    'initializer_range': 0.02,
    'intermediate_size': 8192,
    'max_position_embeddings': 131072,
    'mlp_bias': False,
    'model_type': 'llama',
    'num_attention_heads': 32,
    'num_hidden_layers': 16,
    'num_key_value_heads': 8,
    'pretraining_tp': 1,
    'rms_norm_eps': 1e-05,
    'rope_scaling': {
        'factor': 32.0,
        'high_freq_factor': 4.0,
        'low_freq_factor': 1.0,
        'original_max_position_embeddings': 8192,
        'rope_type': 'llama3',
    },
    'rope_theta': 500000.0,
    'tie_word_embeddings': True,
    'torch_dtype': 'bfloat16',
    'transformers_version': '4.45.0.dev0',
    'use_cache': True,
    'vocab_size': 128256,
}


def _v5_form(classic: dict) -> dict:
  """The same model as transformers 5 writes it (rope_parameters, no top-level rope_theta)."""
  return transformers.LlamaConfig(**classic).to_dict()


def test_classic_and_v5_forms_parse_to_the_same_config():
  v5 = _v5_form(LLAMA32_1B_CLASSIC)
  assert 'rope_parameters' in v5 and v5.get('rope_scaling') is None
  classic = ModelConfig.from_hf(LLAMA32_1B_CLASSIC)
  assert ModelConfig.from_hf(v5) == classic
  assert classic == PRESETS['llama3.2-1b']


def test_legacy_type_key_and_default_rope():
  legacy = dict(LLAMA32_1B_CLASSIC, rope_scaling={**LLAMA32_1B_CLASSIC['rope_scaling']})
  legacy['rope_scaling']['type'] = legacy['rope_scaling'].pop('rope_type')
  assert ModelConfig.from_hf(legacy).rope_scaling == RopeScaling(32.0, 1.0, 4.0, 8192)

  plain = dict(LLAMA32_1B_CLASSIC, rope_scaling=None)
  assert ModelConfig.from_hf(plain).rope_scaling is None
  v5 = _v5_form(plain)
  assert v5['rope_parameters']['rope_type'] == 'default'
  assert ModelConfig.from_hf(v5) == ModelConfig.from_hf(plain)


def test_head_dim_defaults_to_hidden_over_heads():
  hf = {k: v for k, v in LLAMA32_1B_CLASSIC.items() if k != 'head_dim'}
  assert ModelConfig.from_hf(hf).head_dim == 2048 // 32


def test_hf_defaults_for_absent_optional_fields():
  minimal = dict(
      model_type='llama',
      vocab_size=16,
      hidden_size=64,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
  )
  config = ModelConfig.from_hf(minimal)
  reference = transformers.LlamaConfig(**minimal)
  assert config.num_kv_heads == reference.num_key_value_heads == 4
  assert config.rms_norm_eps == reference.rms_norm_eps
  assert config.rope_theta == reference.rope_parameters['rope_theta']
  assert config.tie_word_embeddings == reference.tie_word_embeddings
  assert config.max_position_embeddings == reference.max_position_embeddings


def _with(**changes):
  return {**LLAMA32_1B_CLASSIC, **changes}


@pytest.mark.parametrize(
    'hf, field',
    [
        (_with(rope_scaling={'rope_type': 'yarn', 'factor': 4.0}), 'rope_type'),
        (_with(rope_scaling={'type': 'linear', 'factor': 2.0}), 'rope_type'),
        (_with(rope_scaling={'rope_type': 'llama3', 'factor': 8.0}), 'low_freq_factor'),
        (_with(rope_scaling={**LLAMA32_1B_CLASSIC['rope_scaling'], 'mystery': 1}), 'mystery'),
        (
            _with(
                rope_scaling=None,
                rope_parameters={
                    'rope_type': 'default',
                    'rope_theta': 500000.0,
                    'partial_rotary_factor': 0.5,
                },
            ),
            'partial_rotary_factor',
        ),
        (_with(rope_parameters={'rope_type': 'default', 'rope_theta': 1.0}), 'rope_parameters'),
        (
            _with(rope_scaling=None, rope_parameters={'rope_type': 'default', 'rope_theta': 7.0}),
            'rope_theta',
        ),
        (_with(hidden_act='gelu'), 'hidden_act'),
        (_with(attention_bias=True), 'attention_bias'),
        (_with(mlp_bias=True), 'mlp_bias'),
        (_with(model_type='mistral'), 'model_type'),
        ({k: v for k, v in LLAMA32_1B_CLASSIC.items() if k != 'model_type'}, 'model_type'),
        ({k: v for k, v in LLAMA32_1B_CLASSIC.items() if k != 'vocab_size'}, 'vocab_size'),
        (_with(quantization_config={'quant_method': 'bitsandbytes'}), 'quantization_config'),
        (_with(num_key_value_heads=5), 'num_kv_heads'),
    ],
)
def test_unsupported_fields_raise_naming_the_field(hf, field):
  with pytest.raises(ValueError, match=field):
    ModelConfig.from_hf(hf)


def test_to_hf_round_trips_and_transformers_reads_it():
  for name, config in PRESETS.items():
    hf = config.to_hf()
    assert ModelConfig.from_hf(hf) == config, name
    reference = transformers.LlamaConfig(**hf)
    assert reference.head_dim == config.head_dim
    assert reference.rope_parameters['rope_theta'] == config.rope_theta
    assert reference.tie_word_embeddings == config.tie_word_embeddings
    assert ModelConfig.from_hf(reference.to_dict()) == config, name


@pytest.mark.parametrize(
    'name, shape',
    [
        # name: (layers, hidden, heads, kv heads, head_dim, mlp, tied, rope factor)
        ('llama3.2-1b', (16, 2048, 32, 8, 64, 8192, True, 32.0)),
        ('llama3.2-3b', (28, 3072, 24, 8, 128, 8192, True, 32.0)),
        ('llama3.1-8b', (32, 4096, 32, 8, 128, 14336, False, 8.0)),
        ('llama3-8b', (32, 4096, 32, 8, 128, 14336, False, None)),
    ],
)
def test_published_presets(name, shape):
  c = ModelConfig.preset(name)
  rope_factor = c.rope_scaling.factor if c.rope_scaling else None
  assert (
      c.num_layers,
      c.hidden_size,
      c.num_heads,
      c.num_kv_heads,
      c.head_dim,
      c.intermediate_size,
      c.tie_word_embeddings,
      rope_factor,
  ) == shape
  assert c.vocab_size == 128256 and c.rope_theta == 500_000.0


def test_small_presets_and_param_counts():
  tiny, small = ModelConfig.preset('tiny'), ModelConfig.preset('small')
  assert (
      tiny.vocab_size,
      tiny.hidden_size,
      tiny.num_layers,
      tiny.num_heads,
      tiny.num_kv_heads,
      tiny.head_dim,
      tiny.intermediate_size,
      tiny.max_position_embeddings,
      tiny.rope_theta,
  ) == (16, 128, 4, 4, 2, 32, 512, 8192, 10_000.0)
  assert (
      small.hidden_size,
      small.num_layers,
      small.num_heads,
      small.num_kv_heads,
      small.intermediate_size,
  ) == (256, 6, 8, 4, 768)
  assert 4.5e6 < small.num_params < 5.5e6
  assert round(ModelConfig.preset('llama3.2-1b').num_params / 1e9, 2) == 1.24
  assert round(ModelConfig.preset('llama3.1-8b').num_params / 1e9, 2) == 8.03
  with pytest.raises(ValueError, match='unknown model preset'):
    ModelConfig.preset('gpt2')


def test_config_is_hashable_and_static_under_jit():
  config = ModelConfig.preset('tiny', compute_dtype='bfloat16', remat='dots')
  assert hash(config) == hash(ModelConfig.preset('tiny', compute_dtype='bfloat16', remat='dots'))
  f = jax.jit(lambda c: c.hidden_size * 2, static_argnums=0)
  assert f(config) == 256


@pytest.mark.parametrize(
    'changes, field',
    [
        (dict(remat='some'), 'remat'),
        (dict(compute_dtype='float64'), 'compute_dtype'),
        (dict(num_kv_heads=3), 'num_heads'),
        (dict(head_dim=31), 'head_dim'),
        (dict(num_layers=0), 'num_layers'),
    ],
)
def test_invalid_fields_raise(changes, field):
  with pytest.raises(ValueError, match=field):
    ModelConfig.preset('tiny', **changes)
