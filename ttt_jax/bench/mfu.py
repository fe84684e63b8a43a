"""Model FLOPs utilisation of the TTT step (vmapped over T tasks vs a loop).

FLOPs are counted analytically (XLA's cost_analysis counts a scanned layer
once). Per step, with n = T * batch * seq tokens:

  forward   2 n N_matmul + attention + LoRA forward
            N_matmul: the projections' and the LM head's weights (the
            embedding is a gather); attention: QK^T and AV, 2 * 2 * S * Dh
            per query head and token, halved for the causal mask; LoRA:
            2 n r (in + out) per target and layer.
  backward  activation gradients only: the base weights are frozen, so their
            matmuls cost 1x the forward (dX), not 2x; attention 2x; LoRA 2x
            (dX and the adapter's own gradients).
  total     2 * base + 3 * attention + 3 * LoRA   (remat recompute not counted)

MFU = total / seconds / peak; peak from `--peak_flops` or the device table.
"""

from __future__ import annotations

import dataclasses

import jax

from ttt_jax.bench import report, workload
from ttt_jax.model import llama, quant
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, projection_shapes
from ttt_jax.train.ttt_config import TTTConfig

# Dense bf16 peak FLOP/s per chip, by a substring of jax's device_kind.
PEAK_BF16_FLOPS: dict[str, float] = {
    'H200': 989e12,
    'H100': 989e12,
    'A100': 312e12,
    'L40S': 362e12,
    'A10G': 70e12,
    'TPU v6': 918e12,
    'TPU v5p': 459e12,
    'TPU v5': 197e12,
    'TPU v4': 275e12,
}


@dataclasses.dataclass(frozen=True)
class StepFlops:
  base: float  # frozen-weight matmuls, forward + dX
  attention: float  # scores and weighted values, forward + backward
  lora: float  # adapter matmuls, forward + backward

  @property
  def total(self) -> float:
    return self.base + self.attention + self.lora


def ttt_step_flops(
    config: ModelConfig, lora_config: LoraConfig, num_tasks: int, batch_size: int, seq_len: int
) -> StepFlops:
  """Model FLOPs of one TTT step of T tasks (see the module docstring)."""
  tokens = num_tasks * batch_size * seq_len
  shapes = projection_shapes(config)
  layer_weights = sum(i * o for i, o in shapes.values())
  matmul_params = config.num_layers * layer_weights + config.hidden_size * config.vocab_size
  attention_fwd = (
      2 * 2 * seq_len * config.head_dim * config.num_heads * config.num_layers * tokens / 2
  )
  lora_fwd = sum(
      2 * tokens * lora_config.rank * sum(shapes[t]) * config.num_layers
      for t in lora_config.targets
  )
  return StepFlops(
      base=2 * 2 * matmul_params * tokens, attention=3 * attention_fwd, lora=3 * lora_fwd
  )


def peak_flops(device_kind: str, override: float | None = None) -> float | None:
  """Peak bf16 FLOP/s of one device: the override, else the table, else None."""
  if override:
    return float(override)
  for name, peak in PEAK_BF16_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def step_setup(preset: str, rank: int, batch_size: int, **config_fields):
  """(model config, random weights, TTT config) of the step benches: LoRA r`rank` on
  every target the paper trains, slots vmapped."""
  config = ModelConfig.preset(preset, **config_fields)
  params = llama.init_params(config, jax.random.key(0))
  ttt_config = TTTConfig(
      lora=LoraConfig(rank=rank),
      batch_size=batch_size,
      lr=1e-4,
      epochs=1000,
      warmup_frac=0.0,
      over_slots='vmap',  # the 'vmap' mode is vmapped on any backend ('auto' maps on a CPU)
  )
  return config, params, ttt_config


def bench_mfu(
    preset: str = 'llama3.2-1b',
    num_tasks: tuple[int, ...] = (1, 8, 16),
    batch_size: int = 2,
    seq_len: int = 2048,
    rank: int = 128,
    vocab_size: int | None = 16,
    compute_dtype: str = 'bfloat16',
    param_dtype: str = 'bfloat16',
    remat: str = 'full',
    steps: int = 3,
    modes: tuple[str, ...] = ('vmap', 'loop'),
    peak: float | None = None,
    config_overrides: dict | None = None,
    quantize: str | None = None,
    out: str | None = None,
) -> dict:
  """MFU of the TTT step for each T and mode on random weights; prints a table.

  vocab_size defaults to 16: TTT runs on the vocab-shrunk model (16 ARC tokens).
  `quantize` ('nf4' | 'int8'): the base's projections held quantized (QLoRA); MFU still
  counts the dense step's FLOPs, so it says what the dequantizing costs.
  """
  overrides = dict(config_overrides or {})
  if vocab_size:
    overrides['vocab_size'] = vocab_size
  config, params, ttt_config = step_setup(
      preset, rank, batch_size, param_dtype=param_dtype, compute_dtype=compute_dtype,
      remat=remat, **overrides,
  )  # fmt: skip
  if quantize:
    params = quant.quantize_params(params, quantize)
  device_peak = peak_flops(jax.devices()[0].device_kind, peak)
  rows = []
  for t in num_tasks:
    arrays = workload.random_tasks(t, 4 * batch_size, seq_len, seed=0)
    flops = ttt_step_flops(config, ttt_config.lora, t, batch_size, seq_len)
    for mode in modes:
      groups = [range(t)] if mode == 'vmap' else [range(i, i + 1) for i in range(t)]
      states = [workload.fill_slots(arrays, g, config, ttt_config) for g in groups]
      seconds = workload.time_steps(params, states, steps, config, ttt_config)[0] / steps
      achieved = flops.total / seconds
      rows.append(
          {
              'T': t,
              'mode': mode,
              's/step': seconds,
              'tokens/s': t * batch_size * seq_len / seconds,
              'TFLOP/step': flops.total / 1e12,
              'TFLOP/s': achieved / 1e12,
              'MFU': achieved / device_peak if device_peak else None,
          }
      )
      del states
  title = (
      f'TTT step MFU, {preset} shape (vocab {config.vocab_size}, {config.num_params / 1e9:.2f}B'
      f' params), batch {batch_size} x {seq_len}, LoRA r{rank}, {compute_dtype}, '
      f'remat {remat}, {jax.devices()[0].device_kind}, peak {device_peak}'
      + (f', base in {quantize}' if quantize else '')
  )
  return report.report(title, rows, out=out, peak_flops=device_peak)
