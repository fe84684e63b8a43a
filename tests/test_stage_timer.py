"""StageTimer: wall seconds per stage and the part JAX spent compiling."""

import json
import time

import jax
import jax.numpy as jnp

from ttt_jax.stage_timer import StageTimer


def test_stages_record_wall_and_compile_seconds(tmp_path):
  timer = StageTimer()
  fn = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 0.123)  # a function new to this process
  x = jnp.ones((64, 64))
  with timer.stage('compile and run'):
    jax.block_until_ready(fn(x))
  with timer.stage('run again'):
    jax.block_until_ready(fn(x))
    time.sleep(0.05)
  first, second = timer.rows
  assert first['stage'] == 'compile and run' and 0 < first['compile_s'] <= first['wall_s']
  assert second['compile_s'] == 0.0 and second['wall_s'] >= 0.05
  table = timer.table().splitlines()
  assert table[0] == '| stage | wall s | of which compiling s |'
  assert table[2].startswith('| compile and run | ') and table[-1].startswith('| total | ')
  timer.write(str(tmp_path / 't.json'))
  assert json.loads((tmp_path / 't.json').read_text()) == timer.rows
