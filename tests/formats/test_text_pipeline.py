"""TTT and prediction end to end in both text formats: a random tiny Llama whose
checkpoint carries a tokenizer trained here and a Llama-3 chat template."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest

import format_testlib as fl
from ttt_jax.data import arc
from ttt_jax.data.arc import Pair, Task
from ttt_jax.formats import load_format
from ttt_jax.infer import predict
from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import ttt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, arg):
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'{name}_cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tasks():
  rng = np.random.default_rng(0)
  grid = lambda: rng.integers(0, 10, rng.integers(1, 4, 2))
  flip = lambda g: g[:, ::-1]
  pairs = lambda n: tuple(Pair(g, flip(g)) for g in (grid() for _ in range(n)))
  return [Task('aaa', pairs(3), pairs(1)), Task('bbb', pairs(2), pairs(1))]


def _checkpoint(directory, template):
  vocab = fl.write_tiny_tokenizer(directory, template)
  config = ModelConfig.preset('tiny').replace(vocab_size=vocab)
  hf.save_hf(directory, config, llama.init_params(config, jax.random.key(0)))


@pytest.mark.parametrize(
    'name, template', [('marc', fl.LLAMA3_CHAT_TEMPLATE), ('barc', fl.LLAMA31_CHAT_TEMPLATE)]
)
def test_ttt_and_predict_end_to_end(tmp_path, name, template):
  checkpoint = str(tmp_path / 'ckpt')
  _checkpoint(checkpoint, template)
  arc.save_task_dir(_tasks(), tmp_path / 'tasks')
  selector = f'dir:{tmp_path / "tasks"}'

  c = _config('ttt', 'runlocal')
  c.model.checkpoint_dir, c.model.format = checkpoint, name
  c.data.selector, c.data.seq_len, c.data.max_examples = selector, 1024, 4
  c.ttt.lora.rank, c.ttt.max_steps, c.ttt.loss_capacity, c.run.num_slots = 4, 2, 512, 2
  results = ttt.run_ttt(c, str(tmp_path / 'ttt'))
  assert sorted(r.status for r in results) == ['done', 'done']
  assert all(r.steps == 2 and all(np.isfinite(r.losses)) for r in results)

  p = _config('predict', 'runlocal')
  p.model.checkpoint_dir, p.model.format, p.selector = checkpoint, name, selector
  p.score_augmentations = 2
  out = str(tmp_path / 'predict')
  score = predict.run_from_config(p, out, adapters_dir=str(tmp_path / 'ttt' / 'adapters'))
  assert score is not None and score.num_tasks == 2
  records = predict.read_done(out)
  fmt = load_format(name, checkpoint)
  for task in _tasks():
    record = records[task.id]
    assert record['num_variants'] > 0 and np.isfinite(record['details'][0]['truth_nll'])
    for c in record['candidates'][0]:
      assert np.isfinite(c['logprob'])
      # A malformed answer is an invalid candidate (no grid, score -inf), never an error.
      assert (c['grid'] is None) == (c['score'] == -np.inf)
      assert c['grid'] is None or np.asarray(c['grid']).ndim == 2
  submission = json.load(open(os.path.join(out, 'submission.json')))
  assert set(submission) == {'aaa', 'bbb'}
  assert (
      fmt.vocab_size == ModelConfig.from_hf(json.load(open(f'{checkpoint}/config.json'))).vocab_size
  )


def test_a_text_format_on_a_compact_model_is_a_clear_error(tmp_path):
  checkpoint = str(tmp_path / 'ckpt')
  fl.write_tiny_tokenizer(checkpoint)
  config = ModelConfig.preset('tiny')  # 16 rows: the compact vocabulary
  hf.save_hf(checkpoint, config, llama.init_params(config, jax.random.key(0)))
  arc.save_task_dir(_tasks(), tmp_path / 'tasks')
  c = _config('ttt', 'runlocal')
  c.model.checkpoint_dir, c.model.format = checkpoint, 'marc'
  c.data.selector = f'dir:{tmp_path / "tasks"}'
  with pytest.raises(ValueError, match=r'--config\.model\.format: .* needs format=compact'):
    ttt.run_ttt(c, str(tmp_path / 'ttt'))
