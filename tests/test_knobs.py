"""The tuning flags: XLA_FLAGS composition, model overrides, the step profiler."""

import glob
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from ml_collections import config_dict

from ttt_jax import knobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def parsed_flags():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def test_xla_flags_value_appends_and_dumps():
  value = knobs.xla_flags_value(
      '--xla_force_host_platform_device_count=8',
      '--xla_cpu_use_thunk_runtime=false  --xla_foo=1',
      '/tmp/dump',
  )
  assert value.split() == [
      '--xla_force_host_platform_device_count=8',
      '--xla_cpu_use_thunk_runtime=false',
      '--xla_foo=1',
      '--xla_dump_to=/tmp/dump',
  ]
  assert knobs.xla_flags_value('', '') == ''


def test_xla_flags_value_rejects_non_xla_flags():
  with pytest.raises(ValueError, match='--remat'):
    knobs.xla_flags_value('', '--xla_ok=1 --remat=full')


def test_apply_xla_flags_after_backend_start_is_an_error():
  jax.devices()  # the backend is up in this process
  with flagsaver.flagsaver(xla_flags='--xla_dump_hlo_as_text'):
    with pytest.raises(RuntimeError, match='before JAX starts'):
      knobs.apply_xla_flags()


def test_hlo_dump_dir_reaches_xla_in_a_fresh_process(tmp_path):
  # In a fresh process the flag is applied before the backend starts, so XLA dumps.
  script = textwrap.dedent(f"""
      import sys
      from absl import flags
      import jax, jax.numpy as jnp
      from ttt_jax import knobs
      flags.FLAGS(['prog', '--hlo_dump_dir={tmp_path}', '--xla_flags=--xla_dump_hlo_as_text'])
      knobs.apply_xla_flags()
      jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()
  """)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-c', script],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert glob.glob(str(tmp_path / '*.txt')), os.listdir(tmp_path)


def test_override_model_writes_only_given_flags():
  model = config_dict.ConfigDict(dict(remat='none', compute_dtype='float32'))
  model.lock()
  knobs.override_model(model)
  assert (model.remat, model.compute_dtype) == ('none', 'float32')
  with flagsaver.flagsaver(remat='dots', compute_dtype='bfloat16'):
    knobs.override_model(model)
  assert (model.remat, model.compute_dtype) == ('dots', 'bfloat16')


def test_step_profiler_traces_and_passes_results_through(tmp_path):
  step = jax.jit(lambda x: x + 1.0)
  profiler = knobs.StepProfiler(str(tmp_path), steps=2)
  profiled = profiler.wrap(step)
  x = jnp.zeros(4)
  for _ in range(5):
    x = profiled(x)
  np.testing.assert_array_equal(np.asarray(x), np.full(4, 5.0))
  assert not profiler.active  # stopped itself after steps 2..3
  assert glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))


def test_step_profiler_off_is_the_identity():
  def step(x):
    return x

  assert knobs.StepProfiler(None).wrap(step) is step
  with pytest.raises(ValueError, match='profile_steps'):
    knobs.StepProfiler('/tmp/p', steps=0)


def test_profiled_step_wraps_the_module_step_and_restores_it():
  step = lambda x: x + 1
  module = types.SimpleNamespace(train_step=step)
  with knobs.profiled_step(module):
    assert module.train_step(1) == 2  # profiling off by default: the same function
  assert module.train_step is step
