"""The synthetic TTT workload the step benchmarks share: random full-length tasks, slots
filled with them, and the time of a number of steps."""

from __future__ import annotations

import time

import jax
import numpy as np

from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.train import slots as slot_ops
from ttt_jax.train import ttt_step


def random_tasks(num_tasks: int, num_examples: int, seq_len: int, seed: int) -> TTTArrays:
  """Full-length random sequences, loss on the second half of every row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 13, (num_tasks, num_examples, seq_len)).astype(np.int32)
  loss_mask = np.zeros_like(tokens)
  loss_mask[..., seq_len // 2 :] = 1
  lengths = np.full((num_tasks, num_examples), seq_len, np.int32)
  return TTTArrays(tokens, loss_mask, lengths, np.full((num_tasks,), num_examples, np.int32))


def fill_slots(arrays: TTTArrays, tasks: range, model_config, ttt_config):
  """(slots, data) with task t of `arrays` in slot t - tasks.start, one job each."""
  n, s = arrays.tokens.shape[1:]
  packed = arrays.segments is not None
  slots, data = slot_ops.empty_slots(len(tasks), n, s, model_config, ttt_config, packed=packed)
  for slot, t in enumerate(tasks):
    slots, data = slot_ops.place_job(
        slots,
        data,
        slot,
        jax.tree.map(lambda x: x[t], arrays),
        t,
        t,
        ttt_config.hyper(),
        model_config=model_config,
        ttt_config=ttt_config,
    )
  return slots, data


def run_steps(params, states, steps: int, model_config, ttt_config):
  """(seconds, states, real tokens trained) after `steps` steps of every (slots, data) in
  `states`: the step donates its slots, so a caller that times again goes on from the
  returned ones."""
  start, tokens = time.perf_counter(), []
  for _ in range(steps):
    stepped = [
        ttt_step.train_step(params, s, d, model_config=model_config, ttt_config=ttt_config)
        for s, d in states
    ]
    states = [(s, d) for (s, _), (_, d) in zip(stepped, states)]
    tokens += [metrics['tokens'] for _, metrics in stepped]
  jax.block_until_ready([s for s, _ in states])
  seconds = time.perf_counter() - start
  return seconds, states, int(sum(np.sum(t) for t in jax.device_get(tokens)))


def time_steps(params, states, steps: int, model_config, ttt_config) -> tuple[float, int]:
  """(seconds, real tokens) of `steps` steps of every (slots, data) in `states`, after a
  warm-up."""
  _, states, _ = run_steps(params, states, 1, model_config, ttt_config)  # compile
  seconds, _, tokens = run_steps(params, states, steps, model_config, ttt_config)
  return seconds, tokens
