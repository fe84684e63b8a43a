"""Benchmark: sampling programs the way the induction run does (ttt_jax/induction/sample.py).

A random model of `preset` with a Llama-3-sized vocabulary (the sampler draws over all
of it), B rows of T tasks (B / T samples of each task's prompt of P tokens), N new
tokens (no stop token, so every row makes N). Timed in interleaved rounds after a
compile/warm-up run of each way: temperature 0.8 with top-p 1 and 0.95, each task's
prompt prefilled once for its rows (what sample.py does) or once per row; greedy for
scale. Seconds include the prefill.

  python -m launch.bench --bench=sample --rounds=3
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from ttt_jax.bench import interleave, report
from ttt_jax.bench.decode import NEVER
from ttt_jax.infer import decode
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig

LLAMA3_VOCAB = 128_256
SHARED = 'T=0.8, prompt prefilled once per task'
ALL_WAYS = (
    SHARED,
    'T=0.8, top-p 0.95, prompt prefilled once per task',
    'T=0.8, prompt prefilled once per row',
    'greedy, prompt prefilled once per task',
)


def benchmark_sampling(
    preset: str = 'tiny',
    batch: int = 16,
    prompt_len: int = 1600,
    new_tokens: int = 256,
    num_tasks: int = 2,
    vocab_size: int = LLAMA3_VOCAB,
    rounds: int = 3,
    out: str | None = None,
    dtype: str = 'float32',
    ways: tuple[str, ...] | None = None,
) -> dict:
  """New tokens/s of each way (`ways`: some of them by name; None: all) with weights and
  compute in `dtype`; returns (and optionally writes) the results."""
  if batch % num_tasks:
    raise ValueError(f'batch {batch} is not a multiple of num_tasks {num_tasks}')
  config = ModelConfig.preset(preset, param_dtype=dtype, compute_dtype=dtype)
  config = config.replace(vocab_size=vocab_size)
  params = llama.init_params(config, jax.random.key(0))
  chosen = tuple(ways or ALL_WAYS)
  unknown = set(chosen) - set(ALL_WAYS)
  if unknown:
    raise ValueError(f'sampling ways {sorted(unknown)}: not among {ALL_WAYS}')
  rng = np.random.default_rng(0)
  task_prompts = rng.integers(0, vocab_size, (num_tasks, prompt_len)).astype(np.int32)
  task_B = np.repeat(np.arange(num_tasks), batch // num_tasks)
  tokens, lengths = task_prompts[task_B], np.full((batch,), prompt_len, np.int32)
  source_B = np.searchsorted(task_B, task_B).astype(np.int32)  # each task's first row
  keys = jax.random.split(jax.random.key(1), batch)
  run = functools.partial(
      decode.generate,
      params,
      config,
      tokens,
      lengths,
      rng_B=keys,
      max_new_tokens=new_tokens,
      stop_ids=(NEVER,),
  )
  all_ways = {
      SHARED: lambda: run(sampler=decode.Sampling(0.8), prompt_source_B=source_B),
      ALL_WAYS[1]: lambda: run(sampler=decode.Sampling(0.8, 0.95), prompt_source_B=source_B),
      ALL_WAYS[2]: lambda: run(sampler=decode.Sampling(0.8)),
      ALL_WAYS[3]: lambda: run(prompt_source_B=source_B),
  }
  timers = {name: interleave.warm_timer(fn) for name, fn in all_ways.items() if name in chosen}
  stats = interleave.ratio_stats(interleave.interleaved(timers, rounds), chosen[0])
  rows = [
      {
          'method': name,
          'seconds': st['median_s'],
          'new_tokens_per_s': batch * new_tokens / st['median_s'],
          'vs_first': st['ratio_median'],
      }
      for name, st in stats.items()
  ]
  title = (
      f'sampling, {preset} with vocab {vocab_size}, {num_tasks} tasks x {batch // num_tasks} '
      f'samples, prompt {prompt_len}, {new_tokens} new tokens ({jax.devices()[0]}); medians '
      f'of {rounds} interleaved rounds'
  )
  return report.report(title, rows, out=out)
