"""The ConfigDict <-> dataclass bridge, the configs built on it, and user errors at the
command line (one line naming the flag, no traceback)."""

import dataclasses
import importlib
import os
import subprocess
import sys

import pytest
from ml_collections import config_dict

from ttt_jax.dataclass_config import from_config_dict, to_config_dict
from ttt_jax.data.ttt_data import TTTDataConfig
from ttt_jax.errors import UserError
from ttt_jax.infer import predict
from ttt_jax.model.builtin import ModelSpec
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train import finetune, ttt
from ttt_jax.train.ttt_config import TTTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, arg=''):
  return importlib.import_module(f'configs.{name}').get_config(arg)


def test_round_trip_with_nesting_tuples_and_placeholders():
  config = TTTConfig(lora=LoraConfig(rank=4, targets=('q', 'v')), max_steps=None)
  block = to_config_dict(config)
  assert block.lora.rank == 4 and block.max_steps is None
  block.max_steps = 7  # a placeholder of int: a flag can set it
  block.lora.targets = ['q', 'k']  # as a YAML/JSON override would give it
  back = from_config_dict(TTTConfig, block, where='config.ttt')
  assert back == dataclasses.replace(config, max_steps=7, lora=LoraConfig(4, targets=('q', 'k')))
  assert from_config_dict(TTTConfig, to_config_dict(TTTConfig()), where='x') == TTTConfig()


def test_errors_name_the_flag():
  block = to_config_dict(TTTConfig())
  block.lora.rank = 0
  with pytest.raises(UserError, match=r'^--config\.ttt\.lora\.rank: LoraConfig\.rank must be'):
    from_config_dict(TTTConfig, block, where='config.ttt')
  with pytest.raises(UserError, match=r'^--config\.ttt\.rnak: no such field'):
    from_config_dict(TTTConfig, {'rnak': 3}, where='config.ttt')
  with pytest.raises(UserError, match=r'^--config\.ttt\.warmup_frac: TTTConfig\.warmup_frac'):
    from_config_dict(TTTConfig, {'warmup_frac': 1.5}, where='config.ttt')


def test_each_config_is_its_dataclasses_defaults_plus_overrides():
  # The paper's recipe: configs/ttt.py changes nothing of the dataclass defaults but the
  # model's dtype and remat, which are the recipe's.
  run = ttt.TTTRun.from_config(_config('ttt'))
  assert (run.ttt, run.data, run.run) == (TTTConfig(), TTTDataConfig(), ttt.RunConfig())
  assert run.model == ModelSpec(compute_dtype='bfloat16', remat='full')
  local = ttt.TTTRun.from_config(_config('ttt', 'runlocal'))
  assert local.ttt == TTTConfig(lora=LoraConfig(rank=8, alpha=16.0), epochs=1, max_steps=4)
  p = predict.PredictRun.from_config(_config('predict'))
  assert p.predict == predict.PredictConfig(batch_size=64, length_multiple=256)
  f = finetune.FinetuneRun.from_config(_config('finetune'))
  assert f.optim == finetune.OptimConfig(warmup_steps=50)
  assert f.tasks == finetune.TrainingTasks(
      train=('gen:train@slice=0:20000', 'arc1/train'), val_max_examples=32
  )
  assert f.model == ModelSpec(checkpoint_dir='', positions='grid')
  assert f.lora is None and f.stream.train_only_prob == 0.1 and f.stream.max_len == 512
  # A reference, not a copy: the top-level seed drives the prompts and the data stream.
  c = _config('predict')
  c.seed = 3
  assert predict.PredictRun.from_config(c).predict.prompts.seed == 3
  c = _config('finetune')
  c.seed = 3
  assert finetune.FinetuneRun.from_config(c).stream.seed == 3


@pytest.mark.parametrize(
    'args, flag',
    [
        (['launch.predict', '--config=configs/predict.py:runlocal', '--output_dir=OUT',
          '--config.selector=arc9/eval'], '--config.selector'),
        (['launch.ttt', '--config=configs/ttt.py:runlocal', '--workdir=OUT',
          '--config.ttt.lora.rank=0'], '--config.ttt.lora.rank'),
        (['launch.ttt', '--config=configs/ttt.py:runlocal', '--workdir=OUT',
          '--config.model.checkpoint_dir=/no/such/dir'], '--config.model.checkpoint_dir'),
    ],
)  # fmt: skip
def test_a_user_error_is_one_line_naming_the_flag(tmp_path, args, flag):
  args = [a.replace('OUT', str(tmp_path / 'out')) for a in args]
  proc = subprocess.run(
      [sys.executable, '-m', *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )  # fmt: skip
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr
  fatal = [line for line in proc.stderr.splitlines() if line.startswith('FATAL ')]
  assert len(fatal) == 1 and fatal[0].startswith(f'FATAL {flag}: '), proc.stderr[-2000:]


def test_config_dict_placeholder_types_follow_the_hints():
  block = to_config_dict(TTTConfig())
  with pytest.raises(TypeError):
    block.max_steps = 'many'  # an int | None field
  assert isinstance(block.lora, config_dict.ConfigDict)
