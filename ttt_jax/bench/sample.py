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


def benchmark_sampling(
    preset: str = 'tiny',
    batch: int = 16,
    prompt_len: int = 1600,
    new_tokens: int = 256,
    num_tasks: int = 2,
    vocab_size: int = LLAMA3_VOCAB,
    rounds: int = 3,
    out: str | None = None,
) -> dict:
  """New tokens/s of each way; returns (and optionally writes) the results."""
  if batch % num_tasks:
    raise ValueError(f'batch {batch} is not a multiple of num_tasks {num_tasks}')
  config = ModelConfig.preset(preset, param_dtype='float32', compute_dtype='float32')
  config = config.replace(vocab_size=vocab_size)
  params = llama.init_params(config, jax.random.key(0))
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
  ways = {
      SHARED: lambda: run(sampler=decode.Sampling(0.8), prompt_source_B=source_B),
      'T=0.8, top-p 0.95, prompt prefilled once per task': lambda: run(
          sampler=decode.Sampling(0.8, 0.95), prompt_source_B=source_B
      ),
      'T=0.8, prompt prefilled once per row': lambda: run(sampler=decode.Sampling(0.8)),
      'greedy, prompt prefilled once per task': lambda: run(prompt_source_B=source_B),
  }
  timers = {name: interleave.warm_timer(fn) for name, fn in ways.items()}
  stats = interleave.ratio_stats(interleave.interleaved(timers, rounds), SHARED)
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
