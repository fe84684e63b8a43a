"""Tokens/s and MFU of the TTT step on packed vs unpacked rows, with each attention kernel.

The same random examples (lengths uniform in [S/8, S/2]: TTT examples are mostly far
shorter than a row) train either one per row, the rows cut to the length bucket of the
longest example (what run_ttt does with the default length_bucket), or packed first-fit
into rows of S with segment ids (`data.pack`). tokens/s counts real tokens (the step's
`tokens` metric); MFU counts the FLOPs the step computes at its row length, padding
included (mfu.ttt_step_flops), over the device's peak; `fill` is the share of row slots
that hold real tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from ttt_jax.bench import mfu, workload
from ttt_jax.data import ttt_data

LAYOUTS = ('unpacked', 'packed')
# The kernels worth timing per backend and layout (cuDNN takes no segment ids).
KERNELS = {
    'gpu': {'unpacked': ('cudnn', 'pallas_gpu', 'xla'), 'packed': ('pallas_gpu', 'xla')},
    'tpu': {'unpacked': ('splash', 'xla'), 'packed': ('splash', 'xla')},
    'cpu': {'unpacked': ('blockwise', 'xla'), 'packed': ('blockwise', 'xla')},
}


def runs(backend: str) -> list[tuple[str, str]]:
  """(layout, kernel) pairs of `backend`, packed rows with their own kernel first."""
  kernels = KERNELS.get(backend, {layout: ('xla',) for layout in LAYOUTS})
  pairs = [(layout, k) for layout in LAYOUTS for k in kernels[layout]]
  return sorted(pairs, key=lambda p: (p[1] != kernels[p[0]][0], p[0] == 'unpacked'))


def random_examples(num_tasks: int, num_examples: int, seq_len: int, seed: int):
  """Per task, `num_examples` (tokens, loss_mask) pairs of random lengths in [S/8, S/2]
  (the loss on each example's second half)."""
  rng = np.random.default_rng(seed)
  tasks = []
  for _ in range(num_tasks):
    lengths = rng.integers(max(1, seq_len // 8), seq_len // 2 + 1, num_examples)
    tasks.append(
        [
            (rng.integers(0, 13, n).astype(np.int32), (np.arange(n) >= n // 2).astype(np.int32))
            for n in lengths
        ]
    )
  return tasks


def layout_arrays(examples, seq_len: int, layout: str) -> ttt_data.TTTArrays:
  """The tasks' arrays one example per row (cut to the bucket of the longest) or packed."""
  num_examples = max(len(e) for e in examples)
  arrays = ttt_data.pack_tasks(examples, num_examples, seq_len, pack=layout == 'packed')
  if layout == 'packed':
    return arrays
  bucket = ttt_data.TTTDataConfig().length_bucket
  return ttt_data.cut_rows(arrays, ttt_data.row_length(arrays.lengths, seq_len, bucket))


def bench_packing(
    preset: str = 'llama3.2-1b',
    num_tasks: int = 8,
    num_examples: int = 16,
    batch_size: int = 2,
    seq_len: int = 2048,
    rank: int = 128,
    steps: int = 2,
    pairs: Sequence[tuple[str, str]] | None = None,
    deadline: float | None = None,
    compute_dtype: str = 'bfloat16',
    param_dtype: str = 'bfloat16',
    remat: str = 'full',
    peak: float | None = None,
) -> dict:
  """One row per (layout, kernel) of `pairs` (default: `runs` of this backend), T tasks
  vmapped. A pair that fails keeps its error; none starts after `deadline` (monotonic)."""
  config, params, ttt_config = mfu.step_setup(
      preset, rank, batch_size, vocab_size=16, param_dtype=param_dtype,
      compute_dtype=compute_dtype, remat=remat,
  )  # fmt: skip
  device_peak = mfu.peak_flops(jax.devices()[0].device_kind, peak)
  examples = random_examples(num_tasks, num_examples, seq_len, seed=0)
  rows, errors, skipped = [], {}, []
  for layout, kernel in pairs or runs(jax.default_backend()):
    if deadline is not None and time.monotonic() > deadline:
      skipped.append(f'{layout}/{kernel}')
      continue
    arrays = layout_arrays(examples, seq_len, layout)
    row_len = arrays.tokens.shape[-1]
    model_config = config.replace(attention_impl=kernel)
    try:
      state = workload.fill_slots(arrays, range(num_tasks), model_config, ttt_config)
      seconds, tokens = workload.time_steps(params, [state], steps, model_config, ttt_config)
    except Exception as e:  # pylint: disable=broad-except
      errors[f'{layout}/{kernel}'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
      continue
    flops = mfu.ttt_step_flops(model_config, ttt_config.lora, num_tasks, batch_size, row_len)
    achieved = flops.total * steps / seconds
    rows.append(
        {
            'rows': layout,
            'attention': kernel,
            'S': row_len,
            'fill': tokens / (steps * num_tasks * batch_size * row_len),
            's/step': seconds / steps,
            'tokens/s': tokens / seconds,
            'TFLOP/s': achieved / 1e12,
            'MFU': achieved / device_peak if device_peak else None,
        }
    )
  return {
      'title': (
          f'TTT step on packed vs unpacked rows, {preset} shape (vocab 16), T={num_tasks} '
          f'vmapped x batch {batch_size}, examples of {seq_len // 8}-{seq_len // 2} tokens in '
          f'rows of {seq_len}, LoRA r{rank}, {compute_dtype}, remat {remat}, '
          f'{jax.devices()[0].device_kind}'
      ),
      'rows': rows,
      'errors': errors,
      'skipped': skipped,
  }
