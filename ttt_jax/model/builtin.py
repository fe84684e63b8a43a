"""Which base model a run uses: the shipped built-in model, an HF checkpoint, or a random init.

`checkpoint_dir` in every config names it: 'builtin' (the small Llama-3
architecture model trained with configs/finetune.py and shipped in
ttt_jax/assets/builtin_model, see docs/BUILTIN_MODEL.md), a directory in
Hugging Face format, or '' for a randomly initialised preset.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from absl import logging

from ttt_jax import atomic_io, checked_read, formats, hub
from ttt_jax.formats import Format
from ttt_jax.model import hf, llama, quant
from ttt_jax.model.config import ATTENTION_IMPLS, DEFAULT_ATTENTION, POSITION_SCHEMES, ModelConfig

BUILTIN = 'builtin'
# Beside an HF export: the position scheme the weights were trained with (HF config.json
# has no field for it; transformers users pass these ids as position_ids).
SIDECAR = 'ttt_jax.json'
BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets', 'builtin_model')


def resolve(checkpoint_dir: str) -> str:
  """The directory a checkpoint name stands for ('' stays '': no checkpoint); an
  `hf:owner/name` id is fetched into the Hugging Face cache (ttt_jax/hub.py)."""
  if checkpoint_dir == BUILTIN:
    return BUILTIN_DIR
  return hub.local_path(checkpoint_dir, hub.CHECKPOINT_FILES)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which base model a run loads and how it computes: the `model` block of every config."""

  # 'builtin' (shipped), an HF checkpoint dir or hub id (hf:owner/name), or '': a random
  # init of `preset`.
  checkpoint_dir: str = BUILTIN
  preset: str = 'tiny'
  # How tasks become tokens (ttt_jax/formats): 'compact' (16 tokens), or the paper's text
  # prompts through the checkpoint's tokenizer and chat template: 'marc', 'barc'.
  format: str = 'compact'
  # Position ids (ModelConfig.positions): 'auto' is the checkpoint's own scheme, from its
  # ttt_jax.json (written by our stage 1 export), else 'sequential'.
  positions: str = 'auto'

  def __post_init__(self):
    if not isinstance(self.checkpoint_dir, str):
      raise ValueError(
          f"ModelSpec.checkpoint_dir must be a path, {BUILTIN!r} or '' (random init), "
          f'got {self.checkpoint_dir!r}'
      )
    if self.positions not in ('auto', *POSITION_SCHEMES):
      raise ValueError(
          f'ModelSpec.positions must be auto or one of {POSITION_SCHEMES}, got {self.positions!r}'
      )
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(
          f'ModelSpec.attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}'
      )
    if self.quantize not in (None, *quant.KINDS):
      raise ValueError(
          f'ModelSpec.quantize must be None or one of {quant.KINDS}, got {self.quantize!r}'
      )
    if self.format not in formats.FORMATS:
      raise ValueError(f'ModelSpec.format must be one of {formats.FORMATS}, got {self.format!r}')
    if self.format != 'compact' and self.checkpoint_dir in ('', BUILTIN):
      raise ValueError(
          f'ModelSpec.checkpoint_dir: format {self.format!r} needs a Llama-3 checkpoint with '
          'its tokenizer files'
      )

  init_seed: int = 0
  param_dtype: str = 'float32'
  compute_dtype: str = 'float32'
  remat: str = 'none'
  # The attention kernel of full-sequence forwards (ModelConfig.attention_impl): 'auto' is
  # blockwise on CPU; on a GPU cuDNN flash attention for unpacked rows where it applies,
  # Pallas (Triton) for packed ones; splash attention on TPU (model/attention_dispatch.py).
  attention: str = DEFAULT_ATTENTION
  # The paper's QLoRA arm: the frozen base held in 4-bit NormalFloat ('nf4', QLoRA's) or
  # 'int8', dequantized inside each projection's matmul, LoRA on top (model/quant.py);
  # None: as param_dtype. Give TTT and predict the same (their adapters fit that base).
  quantize: str | None = None
  double_quant: bool = False  # with quantize: the block absmaxes in 8 bits too (QLoRA's)


def load_base_model(
    spec: ModelSpec, *, warn_random: bool = True
) -> tuple[ModelConfig, dict, str | None]:
  """(config, params, checkpoint dir or None) of a ModelSpec; the config carries the
  position scheme (`spec.positions`, or the checkpoint's own with 'auto'); with
  `spec.quantize` the layers' projections are quant.QuantizedWeight leaves."""
  config, params = load_model(
      spec.checkpoint_dir,
      preset=spec.preset,
      init_seed=spec.init_seed,
      warn_random=warn_random,
      param_dtype=spec.param_dtype,
      compute_dtype=spec.compute_dtype,
      remat=spec.remat,
  )
  if spec.quantize:
    params = quant.quantize_params(params, spec.quantize, spec.double_quant)
  directory = resolve(spec.checkpoint_dir) or None
  positions = spec.positions
  if positions == 'auto':
    positions = (
        read_sidecar(directory).get('positions', 'sequential') if directory else 'sequential'
    )
  if positions != 'sequential' and spec.format != 'compact':
    raise ValueError(f'ModelSpec.positions: {positions!r} positions exist for format=compact only')
  return config.replace(positions=positions, attention_impl=spec.attention), params, directory


def read_sidecar(directory: str) -> dict:
  """What our stage 1 records beside an HF export (SIDECAR): how to run the model."""
  path = os.path.join(directory, SIDECAR)
  if not os.path.exists(path):
    return {}
  return checked_read.read_json_object(path)


def write_sidecar(directory: str, config: ModelConfig) -> None:
  atomic_io.write_json(os.path.join(directory, SIDECAR), {'positions': config.positions})


def check_base_model(spec: ModelSpec) -> None:
  """Checks a ModelSpec's checkpoint (config, safetensors headers, sidecar, tokenizer)
  without reading its weights: for a run that loads it only after other work (the demo's
  predictions after TTT), so a damaged file ends the run before any work starts."""
  directory = resolve(spec.checkpoint_dir)
  if directory:
    config, _ = hf.check_hf(directory)
    read_sidecar(directory)
  else:
    config = ModelConfig.preset(spec.preset)
  load_format(spec, config)


def load_format(spec: ModelSpec, config: ModelConfig) -> Format:
  """The token format of a ModelSpec, checked against the model's vocabulary."""
  fmt = formats.load_format(spec.format, resolve(spec.checkpoint_dir))
  if fmt.vocab_size > config.vocab_size:
    raise ValueError(
        f'format {spec.format!r} uses {fmt.vocab_size} token ids; the model has only '
        f'{config.vocab_size} (a compact-vocabulary checkpoint needs format=compact)'
    )
  return fmt


def load_model(
    checkpoint_dir: str = BUILTIN,
    *,
    preset: str = 'tiny',
    init_seed: int = 0,
    warn_random: bool = True,
    **options,
) -> tuple[ModelConfig, dict]:
  """(config, params); options are ModelConfig dtype/remat fields (param_dtype, ...)."""
  if checkpoint_dir:
    return hf.load_hf(resolve(checkpoint_dir), **options)
  if warn_random:
    logging.warning(
        "No checkpoint_dir: a RANDOMLY INITIALISED '%s' model (seed %d); "
        'its predictions are noise.',
        preset,
        init_seed,
    )
  config = ModelConfig.preset(preset, **options)
  return config, llama.init_params(config, jax.random.key(init_seed))
