"""The dry-run memory planner: compiles, never allocates, and its numbers
add up (single device here; 4 fake devices in a subprocess via launch.bench)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ttt_jax import memory
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train import slots as slot_ops
from ttt_jax.train.ttt_config import TTTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig.preset('tiny').replace(
    hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16
)
TTT = TTTConfig(lora=LoraConfig(rank=4), batch_size=2)
SINGLE = (('data', 1), ('fsdp', 1), ('tensor', 1))


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_arguments_are_exactly_the_step_inputs():
  t, s, n = 3, 64, 5
  plan = memory.plan_ttt_step(MODEL, TTT, t, s, n, SINGLE)
  params = jax.eval_shape(lambda: llama.init_params(MODEL, jax.random.key(0)))
  slots, _ = jax.eval_shape(lambda: slot_ops.empty_slots(t, n, s, MODEL, TTT))
  data = 2 * t * n * s * 4 + t * n * 4 + t * 4  # tokens, loss_mask, lengths, num_examples
  assert plan.argument == _nbytes(params) + _nbytes(slots) + data
  assert plan.temp > 0 and plan.output > 0
  # The slots are donated: their output buffers alias the inputs.
  assert plan.alias >= _nbytes(slots) * 0.9
  assert plan.peak == plan.argument + plan.output - plan.alias + plan.temp + plan.code


def test_more_tasks_need_more_temp():
  one = memory.plan_ttt_step(MODEL, TTT, 1, 64, 4, SINGLE)
  four = memory.plan_ttt_step(MODEL, TTT, 4, 64, 4, SINGLE)
  assert four.temp > 2 * one.temp and four.argument > one.argument


def test_tasks_must_divide_over_the_data_axis():
  with pytest.raises(ValueError, match='do not divide'):
    memory.plan_ttt_step(MODEL, TTT, 3, 64, 4, (('data', 2), ('fsdp', 1), ('tensor', 1)))


def test_launch_plans_a_sharded_mesh_on_fake_devices(tmp_path):
  """4 fake devices as data=2 x fsdp=2: the tasks are split over both axes,
  so each device plans for exactly one of the four tasks."""
  out = tmp_path / 'memory.json'
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  cmd = [
      sys.executable,
      '-m',
      'launch.bench',
      '--bench=memory',
      '--num_devices=4',
      '--mesh=data:2,fsdp:2',
      '--preset=tiny',
      '--seq_len=128',
      '--num_tasks=2,4',
      '--rank=4',
      '--param_dtype=float32',
      '--compute_dtype=float32',
      '--max_examples=4',
      f'--out={out}',
  ]
  proc = subprocess.run(
      cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['machine']['num_devices'] == 4
  rows = result['rows']
  assert [r['T'] for r in rows] == [4]  # 2 divides over 'data' but not data x fsdp: skipped
  row = rows[0]
  assert row['mesh'] == 'data=2 fsdp=2' and row['tasks/device'] == 1 and row['fits 80 GB']
  parts = row['args GB'] + row['outputs GB'] + row['temp GB']
  assert 0 < parts <= row['peak GB/device'] * (1 + 1e-9)
  model, ttt_config = ModelConfig.preset('tiny', remat='full'), TTTConfig(
      lora=LoraConfig(rank=4), batch_size=2
  )
  one_task = memory.plan_ttt_step(model, ttt_config, 1, 128, 4, SINGLE)
  two_tasks = memory.plan_ttt_step(model, ttt_config, 2, 128, 4, SINGLE)
  # The activations of one task per device, not of the two an fsdp pair would share.
  assert row['temp GB'] * memory.GB < two_tasks.temp
  np.testing.assert_allclose(row['temp GB'] * memory.GB, one_task.temp, rtol=0.05)
