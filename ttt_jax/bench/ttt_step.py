"""Benchmark: the vmapped T-task TTT step vs a Python loop of 1-task steps.

Both run the same `train_step` on the same data (the loop calls it with one
slot at a time), so the ratio is what vmapping the task axis buys (or costs)
on this device.

  python -m ttt_jax.bench.ttt_step --preset=tiny --num_tasks=4 --batch_size=2 \
      --seq_len=1024 --steps=3 --attention_impl=blockwise --loss_capacity=1024 \
      --out=/tmp/bench_ttt.json

LoRA goes on all seven projections by default (the REFERENCE setup).
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags

from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS
from ttt_jax.train import ttt


def _random_tasks(num_tasks: int, num_examples: int, seq_len: int, seed: int) -> TTTArrays:
  """Full-length random sequences, loss on the second half of every row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 13, (num_tasks, num_examples, seq_len)).astype(np.int32)
  loss_mask = np.zeros_like(tokens)
  loss_mask[..., seq_len // 2 :] = 1
  lengths = np.full((num_tasks, num_examples), seq_len, np.int32)
  return TTTArrays(tokens, loss_mask, lengths, np.full((num_tasks,), num_examples, np.int32))


def _fill(arrays: TTTArrays, tasks: range, model_config, ttt_config):
  n, s = arrays.tokens.shape[1:]
  slots, data = ttt.empty_slots(len(tasks), n, s, model_config, ttt_config)
  for slot, t in enumerate(tasks):
    slots, data = ttt.place_job(
        slots,
        data,
        slot,
        TTTArrays(*(x[t] for x in arrays)),
        t,
        t,
        ttt_config.lr,
        model_config=model_config,
        ttt_config=ttt_config,
    )
  return slots, data


def _time_steps(params, states, steps: int, model_config, ttt_config) -> float:
  """Seconds for `steps` steps of every (slots, data) in `states`, after a warm-up."""

  def run(states, n):
    for _ in range(n):
      states = [
          (ttt.train_step(params, s, d, model_config=model_config, ttt_config=ttt_config)[0], d)
          for s, d in states
      ]
    jax.block_until_ready([s for s, _ in states])
    return states

  states = run(states, 1)  # compile
  start = time.perf_counter()
  run(states, steps)
  return time.perf_counter() - start


def bench_ttt_step(
    preset: str = 'tiny',
    num_tasks: int = 4,
    batch_size: int = 2,
    seq_len: int = 512,
    steps: int = 3,
    rank: int = 8,
    targets: tuple[str, ...] = tuple(TARGETS),
    attention_impl: str = 'blockwise',
    loss_capacity: int | None = None,
    out: str | None = None,
) -> dict:
  """tokens/s of one vmapped T-task step vs T single-task steps; prints a table.

  The random tasks have targets on the second half of each row, so
  `loss_capacity=batch_size * seq_len // 2` fits them exactly.
  """
  model_config = ModelConfig.preset(preset, attention_impl=attention_impl)
  ttt_config = ttt.TTTConfig(
      rank=rank,
      targets=tuple(targets),
      lr=1e-4,
      batch_size=batch_size,
      epochs=1000,
      warmup_frac=0.0,
      loss_capacity=loss_capacity,
  )
  params = llama.init_params(model_config, jax.random.key(0))
  arrays = _random_tasks(num_tasks, 4 * batch_size, seq_len, seed=0)
  tokens_per_step = num_tasks * batch_size * seq_len

  vmapped = [_fill(arrays, range(num_tasks), model_config, ttt_config)]
  looped = [_fill(arrays, range(t, t + 1), model_config, ttt_config) for t in range(num_tasks)]
  seconds = {
      'vmap': _time_steps(params, vmapped, steps, model_config, ttt_config),
      'loop': _time_steps(params, looped, steps, model_config, ttt_config),
  }
  result = {
      'device': str(jax.devices()[0].device_kind),
      'num_devices': jax.device_count(),
      'preset': preset,
      'num_tasks': num_tasks,
      'batch_size': batch_size,
      'seq_len': seq_len,
      'rank': rank,
      'targets': list(targets),
      'steps': steps,
      'attention_impl': attention_impl,
      'loss_capacity': loss_capacity,
      **{f'{k}_tokens_per_s': tokens_per_step * steps / v for k, v in seconds.items()},
      **{f'{k}_s_per_step': v / steps for k, v in seconds.items()},
  }
  result['vmap_speedup'] = seconds['loop'] / seconds['vmap']
  print(
      f'TTT step, {preset}, T={num_tasks}, batch {batch_size} x {seq_len}, r={rank} on '
      f"{','.join(targets)}, attention {attention_impl}, loss capacity {loss_capacity}, "
      f"{result['device']} x{result['num_devices']}"
  )
  print(f"{'mode':<6}{'s/step':>10}{'tokens/s':>12}")
  for k in seconds:
    print(f"{k:<6}{result[f'{k}_s_per_step']:>10.3f}{result[f'{k}_tokens_per_s']:>12.0f}")
  print(f"vmap speedup over loop: {result['vmap_speedup']:.2f}x")
  if out:
    with open(out, 'w') as f:
      json.dump(result, f, indent=2)
  return result


def main(argv):
  del argv
  bench_ttt_step(
      _PRESET.value,
      _TASKS.value,
      _BATCH.value,
      _SEQ.value,
      _STEPS.value,
      _RANK.value,
      tuple(_TARGETS.value),
      _ATTENTION.value,
      _CAPACITY.value,
      _OUT.value,
  )


if __name__ == '__main__':
  # Defined only when run as a script: launch/bench.py imports this module
  # and has flags of the same names.
  _PRESET = flags.DEFINE_string('preset', 'tiny', 'ModelConfig preset.')
  _TASKS = flags.DEFINE_integer('num_tasks', 4, 'Tasks T trained together.')
  _BATCH = flags.DEFINE_integer('batch_size', 2, 'Sequences per task per step.')
  _SEQ = flags.DEFINE_integer('seq_len', 512, 'Tokens per sequence.')
  _STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps (after one warm-up).')
  _RANK = flags.DEFINE_integer('rank', 8, 'LoRA rank.')
  _TARGETS = flags.DEFINE_list('targets', list(TARGETS), 'LoRA target projections.')
  _ATTENTION = flags.DEFINE_enum(
      'attention_impl',
      'blockwise',
      ['xla', 'blockwise'],
      'Attention for the full-sequence forward.',
  )
  _CAPACITY = flags.DEFINE_integer(
      'loss_capacity', None, 'LM head on at most this many target tokens per task batch.'
  )
  _OUT = flags.DEFINE_string('out', None, 'JSON output path.')
  app.run(main)
