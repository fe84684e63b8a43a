"""Shared small fixtures for the TTT tests: a ~20k-parameter Llama and
random task data, all deterministic in their seeds; configs/ttt.py and two
tiny task files for whole runs."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import numpy as np

from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train.ttt_config import TTTConfig

# Distinct dims (D 32, F 48, q 32, kv 16, S 20) so a base-weight gradient
# would show up as a dot with a recognisable shape.
MODEL = ModelConfig.preset('tiny').replace(
    hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16
)
TTT = TTTConfig(
    lora=LoraConfig(rank=4, alpha=8.0), lr=1e-2, epochs=2, batch_size=2, warmup_frac=0.0
)
N, S = 5, 20


def base_params(config: ModelConfig = MODEL) -> dict:
  return llama.init_params(config, jax.random.key(0))


def task_arrays(num_tasks: int, num_examples=None, seed: int = 0) -> TTTArrays:
  """Random tokens (colours/markers), half the tokens targets, ragged lengths."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 13, (num_tasks, N, S)).astype(np.int32)
  lengths = rng.integers(S // 2, S + 1, (num_tasks, N)).astype(np.int32)
  valid = np.arange(S) < lengths[..., None]
  loss_mask = ((rng.random((num_tasks, N, S)) < 0.5) & valid).astype(np.int32)
  tokens = np.where(valid, tokens, 15).astype(np.int32)
  if num_examples is None:
    num_examples = rng.integers(1, N + 1, num_tasks)
  num_examples = np.asarray(num_examples, np.int32)
  row_valid = np.arange(N)[None, :] < num_examples[:, None]
  lengths = np.where(row_valid, lengths, 0).astype(np.int32)
  return TTTArrays(tokens, loss_mask, lengths, num_examples)


def one_task(arrays: TTTArrays, t: int) -> TTTArrays:
  return jax.tree.map(lambda x: x[t], arrays)


def fill_slots(arrays: TTTArrays, tasks, config: TTTConfig = TTT, hypers=None, mesh=None):
  """Empty slots of `config` with task tasks[i] in slot i under hypers[i] (default: the
  config's own knobs): (slots, data)."""
  from ttt_jax.train import slots as slot_ops  # pylint: disable=import-outside-toplevel

  slots, data = slot_ops.empty_slots(len(tasks), N, S, MODEL, config, mesh)
  for slot, t in enumerate(tasks):
    hyper = config.hyper() if hypers is None else hypers[slot]
    slots, data = slot_ops.place_job(
        slots,
        data,
        slot,
        one_task(arrays, t),
        t,
        t,
        hyper,
        model_config=MODEL,
        ttt_config=config,
        mesh=mesh,
    )
  return slots, data


def train_slots(params, arrays: TTTArrays, num_slots: int, steps: int, mesh=None):
  """Task t in slot t for t < num_slots, then `steps` train steps: (slots, losses [T, steps])."""
  from ttt_jax.train import ttt_step  # pylint: disable=import-outside-toplevel

  slots, data = fill_slots(arrays, range(num_slots), mesh=mesh)
  losses = []
  for _ in range(steps):
    slots, metrics = ttt_step.train_step(
        params, slots, data, model_config=MODEL, ttt_config=TTT, mesh=mesh
    )
    losses.append(np.asarray(metrics['loss']))  # replicated: addressable on every process
  return slots, np.stack(losses, 1)


def stream(params, arrays: TTTArrays, jobs, num_slots: int = 3, **kwargs):
  """`scheduler.train_stream` of `jobs` on `arrays`: (results, {job: adapter handed out})."""
  from ttt_jax.train import scheduler  # pylint: disable=import-outside-toplevel

  adapters = {}

  def on_job_done(result, adapter):
    adapters[result.job] = adapter

  results = scheduler.train_stream(
      params,
      jobs,
      lambda t: one_task(arrays, t),
      model_config=MODEL,
      ttt_config=TTT,
      num_slots=num_slots,
      max_examples=N,
      seq_len=S,
      on_job_done=on_job_done,
      **kwargs,
  )
  return results, adapters


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


CONFIG_FILE = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'ttt.py')


def load_config(arg):
  """configs/ttt.py's get_config(arg)."""
  spec = importlib.util.spec_from_file_location('ttt_config_file', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def write_tasks(directory):
  """Two 3 x 3 rotation tasks, aaa and bbb, as ARC JSON files in `directory`."""
  rng = np.random.default_rng(0)
  os.makedirs(directory)
  for name in ('aaa', 'bbb'):
    pairs = []
    for _ in range(3):
      grid = rng.integers(0, 10, (3, 3)).tolist()
      pairs.append({'input': grid, 'output': np.rot90(grid).tolist()})
    with open(os.path.join(directory, f'{name}.json'), 'w') as f:
      json.dump({'train': pairs[:2], 'test': pairs[2:]}, f)


def dot_shapes(jaxpr, found: set) -> set:
  """The output shapes of every dot_general of a jaxpr, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      found.add(tuple(eqn.outvars[0].aval.shape))
    for sub in jax.core.jaxprs_in_params(eqn.params):
      dot_shapes(sub, found)
  return found
