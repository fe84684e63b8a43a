"""Llama-3 model configuration: a frozen, hashable dataclass (a static jit argument).

`ModelConfig.from_hf` reads a Hugging Face `config.json` dict in either form:
the classic one of the published Llama-3.x checkpoints (`rope_theta` +
`rope_scaling`) or the one transformers 5 writes (`rope_parameters`).
Anything that would change the math and that we do not implement is a
`ValueError` naming the field, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

REMAT_MODES = ('none', 'full', 'dots')
# The attention kernel of full-sequence forwards (training, scoring, prefill of an empty
# KV cache); 'auto' picks one by backend, dtype, head_dim and packing
# (model/attention_dispatch.py). Decode steps over a filled cache always run
# attention.cached_attention.
ATTENTION_IMPLS = ('auto', 'cudnn', 'splash', 'pallas_gpu', 'xla', 'blockwise')
DEFAULT_ATTENTION = 'auto'
# Position ids: 0, 1, 2, ... (Llama's), or from grid coordinates of compact-format
# tokens (ttt_jax/formats/positions.py); a model trained with one must run with it.
POSITION_SCHEMES = ('sequential', 'grid')


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3.1 frequency scaling of RoPE (transformers' `rope_type='llama3'`)."""

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int
  rope_type: str = 'llama3'

  def __post_init__(self):
    if self.rope_type != 'llama3':
      raise ValueError(f"RopeScaling.rope_type: only 'llama3' is supported, got {self.rope_type!r}")
    if self.high_freq_factor <= self.low_freq_factor:
      raise ValueError(
          'RopeScaling: high_freq_factor must be > low_freq_factor, got '
          f'{self.high_freq_factor} <= {self.low_freq_factor}'
      )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of a Llama-3 decoder. Linear weights are stored [in, out]."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-5
  rope_theta: float = 500_000.0
  rope_scaling: RopeScaling | None = None
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 8192
  param_dtype: str = 'float32'  # how params are stored
  compute_dtype: str = 'float32'  # matmuls; softmax, norms and logits stay float32
  remat: str = 'none'  # 'none' | 'full' | 'dots': jax.checkpoint on each layer
  attention_impl: str = DEFAULT_ATTENTION  # one of ATTENTION_IMPLS; not part of config.json
  positions: str = 'sequential'  # one of POSITION_SCHEMES; not part of config.json

  def __post_init__(self):
    for name in (
        'vocab_size',
        'hidden_size',
        'intermediate_size',
        'num_layers',
        'num_heads',
        'num_kv_heads',
        'head_dim',
    ):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f'ModelConfig.{name} must be a positive int, got {value!r}')
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'ModelConfig.num_heads ({self.num_heads}) must be a multiple of '
          f'num_kv_heads ({self.num_kv_heads})'
      )
    if self.head_dim % 2:
      raise ValueError(f'ModelConfig.head_dim must be even for RoPE, got {self.head_dim}')
    if self.remat not in REMAT_MODES:
      raise ValueError(f'ModelConfig.remat must be one of {REMAT_MODES}, got {self.remat!r}')
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f'ModelConfig.attention_impl must be one of {ATTENTION_IMPLS}, '
          f'got {self.attention_impl!r}'
      )
    if self.positions not in POSITION_SCHEMES:
      raise ValueError(
          f'ModelConfig.positions must be one of {POSITION_SCHEMES}, got {self.positions!r}'
      )
    for name in ('param_dtype', 'compute_dtype'):
      value = getattr(self, name)
      if value not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(
            f"ModelConfig.{name} must be 'float32', 'bfloat16' or 'float16', got {value!r}"
        )
    if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
      raise ValueError(
          f'ModelConfig.rope_scaling must be a RopeScaling or None, got {self.rope_scaling!r}'
      )

  @property
  def param_jnp_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def compute_jnp_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.compute_dtype)

  @property
  def num_params(self) -> int:
    """Parameter count (embedding and LM head counted once each when untied)."""
    d, f, dh = self.hidden_size, self.intermediate_size, self.head_dim
    attn = d * dh * (2 * self.num_heads + 2 * self.num_kv_heads)
    per_layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_word_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * per_layer + d + head

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  # --- Hugging Face config.json -------------------------------------------------------

  @classmethod
  def from_hf(
      cls,
      hf: Mapping[str, Any],
      *,
      param_dtype: str = 'float32',
      compute_dtype: str = 'float32',
      remat: str = 'none',
  ) -> ModelConfig:
    """Builds a config from a `config.json` dict (classic or transformers-5 form)."""
    _check_supported(hf)
    num_heads = _required(hf, 'num_attention_heads')
    hidden_size = _required(hf, 'hidden_size')
    head_dim = hf.get('head_dim')
    if head_dim is None:
      if hidden_size % num_heads:
        raise ValueError(
            f'config.json: hidden_size ({hidden_size}) is not a multiple of '
            f'num_attention_heads ({num_heads}) and head_dim is absent'
        )
      head_dim = hidden_size // num_heads
    rope_theta, rope_scaling = _parse_rope(hf)
    return cls(
        vocab_size=_required(hf, 'vocab_size'),
        hidden_size=hidden_size,
        intermediate_size=_required(hf, 'intermediate_size'),
        num_layers=_required(hf, 'num_hidden_layers'),
        num_heads=num_heads,
        # transformers' LlamaConfig: absent num_key_value_heads means multi-head attention.
        num_kv_heads=hf.get('num_key_value_heads') or num_heads,
        head_dim=head_dim,
        rms_norm_eps=float(hf.get('rms_norm_eps', _HF_DEFAULTS['rms_norm_eps'])),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=bool(
            hf.get('tie_word_embeddings', _HF_DEFAULTS['tie_word_embeddings'])
        ),
        max_position_embeddings=int(
            hf.get('max_position_embeddings', _HF_DEFAULTS['max_position_embeddings'])
        ),
        param_dtype=param_dtype,
        compute_dtype=compute_dtype,
        remat=remat,
    )

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict in the classic form, which transformers 4.x and 5.x both read."""
    rope_scaling = None
    if self.rope_scaling is not None:
      rope_scaling = dict(
          rope_type='llama3',
          factor=self.rope_scaling.factor,
          low_freq_factor=self.rope_scaling.low_freq_factor,
          high_freq_factor=self.rope_scaling.high_freq_factor,
          original_max_position_embeddings=self.rope_scaling.original_max_position_embeddings,
      )
    return {
        'architectures': ['LlamaForCausalLM'],
        'model_type': 'llama',
        'vocab_size': self.vocab_size,
        'hidden_size': self.hidden_size,
        'intermediate_size': self.intermediate_size,
        'num_hidden_layers': self.num_layers,
        'num_attention_heads': self.num_heads,
        'num_key_value_heads': self.num_kv_heads,
        'head_dim': self.head_dim,
        'hidden_act': 'silu',
        'rms_norm_eps': self.rms_norm_eps,
        'rope_theta': self.rope_theta,
        'rope_scaling': rope_scaling,
        'tie_word_embeddings': self.tie_word_embeddings,
        'max_position_embeddings': self.max_position_embeddings,
        'attention_bias': False,
        'mlp_bias': False,
        'torch_dtype': self.param_dtype,
    }

  # --- presets ------------------------------------------------------------------------

  @classmethod
  def preset(cls, name: str, **overrides) -> ModelConfig:
    """A named preset (see `PRESETS`), with optional field overrides (e.g. dtypes)."""
    if name not in PRESETS:
      raise ValueError(f'unknown model preset {name!r}; known: {sorted(PRESETS)}')
    return dataclasses.replace(PRESETS[name], **overrides)


# transformers' LlamaConfig defaults, used where config.json leaves a field out
# (so we read a file exactly as `from_pretrained` does).
_HF_DEFAULTS = dict(
    rms_norm_eps=1e-6, rope_theta=10_000.0, tie_word_embeddings=False, max_position_embeddings=2048
)

# Fields that change the math, with the only values we implement.
_MUST_EQUAL = dict(model_type='llama', hidden_act='silu', attention_bias=False, mlp_bias=False)


def _required(hf: Mapping[str, Any], field: str) -> Any:
  if hf.get(field) is None:
    raise ValueError(f'config.json: required field {field!r} is missing')
  return hf[field]


def _check_supported(hf: Mapping[str, Any]) -> None:
  if not isinstance(hf, Mapping):
    raise ValueError(f'config.json must hold a JSON object, got {type(hf).__name__}')
  _required(hf, 'model_type')
  for field, supported in _MUST_EQUAL.items():
    if field in hf and hf[field] != supported:
      raise ValueError(f'config.json: {field}={hf[field]!r} is not supported (only {supported!r})')
  if hf.get('quantization_config') is not None:
    raise ValueError(
        'config.json: quantization_config is not supported (load an unquantized checkpoint)'
    )


def _parse_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  """Reads (rope_theta, rope_scaling) from `rope_scaling` (classic) or `rope_parameters` (v5)."""
  classic, v5 = hf.get('rope_scaling'), hf.get('rope_parameters')
  if classic is not None and v5 is not None:
    raise ValueError('config.json: both rope_scaling and rope_parameters are set; keep one')
  field = 'rope_parameters' if v5 is not None else 'rope_scaling'
  rope = dict(v5 if v5 is not None else classic or {})
  if not isinstance(rope, dict):
    raise ValueError(f'config.json: {field} must be an object, got {rope!r}')

  theta = rope.pop('rope_theta', None)
  if theta is not None and hf.get('rope_theta') not in (None, theta):
    raise ValueError(
        f'config.json: rope_theta={hf["rope_theta"]} disagrees with ' f'{field}.rope_theta={theta}'
    )
  theta = float(theta if theta is not None else hf.get('rope_theta', _HF_DEFAULTS['rope_theta']))

  rope_type = rope.pop('rope_type', None) or rope.pop('type', None) or 'default'
  rope.pop('type', None)
  if rope.pop('partial_rotary_factor', 1.0) != 1.0:
    raise ValueError(f'config.json: {field}.partial_rotary_factor != 1 is not supported')
  if rope_type == 'default':
    return theta, None
  if rope_type != 'llama3':
    raise ValueError(
        f'config.json: {field}.rope_type={rope_type!r} is not supported '
        "(only 'default' and 'llama3')"
    )
  try:
    scaling = RopeScaling(
        factor=float(rope.pop('factor')),
        low_freq_factor=float(rope.pop('low_freq_factor')),
        high_freq_factor=float(rope.pop('high_freq_factor')),
        original_max_position_embeddings=int(rope.pop('original_max_position_embeddings')),
    )
  except KeyError as e:
    raise ValueError(
        f'config.json: {field} is missing {e.args[0]!r} for rope_type llama3'
    ) from None
  if rope:
    raise ValueError(f'config.json: {field} has unsupported keys {sorted(rope)}')
  return theta, scaling


_LLAMA31_ROPE = RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)
_LLAMA32_ROPE = dataclasses.replace(_LLAMA31_ROPE, factor=32.0)

# Published shapes (meta-llama/*/config.json) and two small CPU models.
PRESETS: dict[str, ModelConfig] = {
    'llama3.2-1b': ModelConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=500_000.0,
        rope_scaling=_LLAMA32_ROPE,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
    ),
    'llama3.2-3b': ModelConfig(
        vocab_size=128256,
        hidden_size=3072,
        intermediate_size=8192,
        num_layers=28,
        num_heads=24,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500_000.0,
        rope_scaling=_LLAMA32_ROPE,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
    ),
    'llama3.1-8b': ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500_000.0,
        rope_scaling=_LLAMA31_ROPE,
        tie_word_embeddings=False,
        max_position_embeddings=131072,
    ),
    'llama3-8b': ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500_000.0,
        rope_scaling=None,
        tie_word_embeddings=False,
        max_position_embeddings=8192,
    ),
    # The project's benchmark model (~1M params).
    'tiny': ModelConfig(
        vocab_size=16,
        hidden_size=128,
        intermediate_size=512,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        max_position_embeddings=8192,
    ),
    # The GPU built-in model (~19M params, launch/gpu_suite.py trains it): as bf16
    # safetensors 38 MB, three shards of < 16 MB.
    'medium': ModelConfig(
        vocab_size=16,
        hidden_size=512,
        intermediate_size=1024,
        num_layers=8,
        num_heads=8,
        num_kv_heads=4,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        max_position_embeddings=8192,
    ),
    # A candidate built-in model (~5M params).
    'small': ModelConfig(
        vocab_size=16,
        hidden_size=256,
        intermediate_size=768,
        num_layers=6,
        num_heads=8,
        num_kv_heads=4,
        head_dim=32,
        rms_norm_eps=1e-5,
        rope_theta=10_000.0,
        max_position_embeddings=8192,
    ),
}
