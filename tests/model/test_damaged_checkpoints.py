"""A damaged base checkpoint ends the run with one line naming the file, before any work:
truncated, emptied or noisy safetensors and JSON files, a missing shard, a config.json
that does not match the tensors, tensors of the wrong dtype."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy

from configs import demo as demo_config
from ttt_jax import demo
from ttt_jax.errors import DamagedFileError, UserError
from ttt_jax.model import builtin, hf, llama
from ttt_jax.model.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The 16-token compact vocabulary, so the launch test below can predict with it.
MODEL = ModelConfig.preset('tiny').replace(
    hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16
)


@pytest.fixture(scope='module')
def params():
  return llama.init_params(MODEL, jax.random.key(0))


@pytest.fixture
def checkpoint_dir(tmp_path, params):
  directory = str(tmp_path / 'ckpt')
  hf.save_hf(directory, MODEL, params)
  builtin.write_sidecar(directory, MODEL)
  return directory


@pytest.fixture
def sharded_dir(tmp_path, params):
  directory = str(tmp_path / 'sharded')
  hf.save_hf(directory, MODEL, params, max_shard_bytes=8_000)
  return directory


@pytest.mark.parametrize('kind', ['truncated', 'zero_length', 'random_bytes'])
def test_a_damaged_weights_file_is_named_before_any_tensor_is_read(checkpoint_dir, damage, kind):
  path = os.path.join(checkpoint_dir, hf.SINGLE_FILE)
  damage(path, kind)
  for load in (hf.check_hf, hf.load_hf):
    with pytest.raises(DamagedFileError, match='not a readable safetensors file') as raised:
      load(checkpoint_dir)
    assert raised.value.path == path and '\n' not in str(raised.value)


@pytest.mark.parametrize('kind', ['truncated', 'zero_length', 'random_bytes'])
def test_a_damaged_config_or_index_is_named(checkpoint_dir, sharded_dir, damage, kind):
  for path in (
      os.path.join(checkpoint_dir, hf.CONFIG_FILE),
      os.path.join(sharded_dir, hf.INDEX_FILE),
  ):
    damage(path, kind)
    with pytest.raises(DamagedFileError, match='not valid JSON') as raised:
      hf.load_hf(os.path.dirname(path))
    assert raised.value.path == path


def test_a_damaged_or_missing_shard_is_named(sharded_dir, damage):
  shards = sorted(f for f in os.listdir(sharded_dir) if f.startswith('model-'))
  assert len(shards) > 2
  damage(os.path.join(sharded_dir, shards[1]), 'truncated')
  with pytest.raises(DamagedFileError, match=f'{shards[1]}: not a readable safetensors'):
    hf.load_hf(sharded_dir)
  damage(os.path.join(sharded_dir, shards[1]), 'missing')
  with pytest.raises(FileNotFoundError, match=f'lists {shards[1]}, which does not exist'):
    hf.load_hf(sharded_dir)


def _edit_config(directory, **changes):
  path = os.path.join(directory, hf.CONFIG_FILE)
  json.dump({**json.load(open(path)), **changes}, open(path, 'w'))


def test_a_config_that_does_not_match_the_tensors_is_named(checkpoint_dir):
  weights = os.path.join(checkpoint_dir, hf.SINGLE_FILE)
  _edit_config(checkpoint_dir, intermediate_size=64)
  with pytest.raises(
      ValueError,
      match=rf"{weights}: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape "
      r'\(48, 32\), expected \(64, 32\) \(config\.json says so\)',
  ):
    hf.check_hf(checkpoint_dir)
  _edit_config(checkpoint_dir, intermediate_size=48, num_hidden_layers=1)
  with pytest.raises(ValueError, match=rf"{weights}: unexpected tensor 'model\.layers\.1\."):
    hf.check_hf(checkpoint_dir)
  _edit_config(checkpoint_dir, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"tensor 'model\.layers\.2\..*' is missing"):
    hf.check_hf(checkpoint_dir)


def test_a_tensor_of_the_wrong_dtype_is_named(checkpoint_dir):
  path = os.path.join(checkpoint_dir, hf.SINGLE_FILE)
  tensors = safetensors.numpy.load_file(path)
  tensors['model.norm.weight'] = tensors['model.norm.weight'].astype(np.int32)
  safetensors.numpy.save_file(tensors, path)
  with pytest.raises(ValueError, match=rf"{path}: tensor 'model\.norm\.weight' has dtype I32"):
    hf.load_hf(checkpoint_dir)


def test_a_damaged_sidecar_is_named(checkpoint_dir, damage):
  path = os.path.join(checkpoint_dir, builtin.SIDECAR)
  damage(path, 'truncated')
  with pytest.raises(DamagedFileError, match='not valid JSON') as raised:
    builtin.load_base_model(builtin.ModelSpec(checkpoint_dir))
  assert raised.value.path == path


def test_the_demo_checks_the_prediction_model_before_training(checkpoint_dir, damage, tmp_path):
  damage(os.path.join(checkpoint_dir, hf.SINGLE_FILE), 'truncated')
  config = demo_config.get_config()
  config.predict.model.checkpoint_dir = checkpoint_dir
  workdir = tmp_path / 'demo'
  with pytest.raises(UserError, match=f'{checkpoint_dir}/model.safetensors: not a readable'):
    demo.run_demo(config, str(workdir))
  assert not (workdir / 'ttt').exists()  # no TTT ran


def test_launch_prints_one_fatal_line_naming_the_file_and_no_traceback(checkpoint_dir, damage):
  weights = os.path.join(checkpoint_dir, hf.SINGLE_FILE)
  damage(weights, 'truncated')
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.predict',
          '--config=configs/predict.py:runlocal',
          f'--output_dir={os.path.dirname(checkpoint_dir)}/out',
          f'--config.model.checkpoint_dir={checkpoint_dir}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  fatal = [line for line in proc.stderr.splitlines() if line.startswith('FATAL')]
  assert fatal == [f'FATAL {weights}: {fatal[0].split(": ", 1)[1]}']
  assert 'not a readable safetensors file (1000 bytes: truncated or damaged?' in fatal[0]
