"""configs/reproduce: each is the paper's recipe, builds valid runs, and demands a checkpoint."""

import importlib

import pytest

from ttt_jax.errors import UserError
from ttt_jax.infer import predict, prompts
from ttt_jax.train import ttt

NAMES = ('marc_8b', 'barc_8b', 'llama32_1b')


def _config(name, arg):
  return importlib.import_module(f'configs.reproduce.{name}').get_config(arg)


@pytest.mark.parametrize('name', NAMES)
def test_halves_build_the_papers_runs(name):
  t = _config(name, 'ttt')
  t.model.checkpoint_dir = '/ckpt'
  run = ttt.TTTRun.from_config(t)
  assert (run.ttt.lora.rank, run.ttt.lora.alpha, run.ttt.epochs, run.ttt.batch_size) == (
      128, 16.0, 2, 2,
  )  # fmt: skip
  assert run.ttt.lr == (5e-5 if name == 'llama32_1b' else 1e-4)
  assert (run.data.max_examples, run.data.seq_len, run.selector) == (250, 8192, 'arc1/eval')
  assert run.model.format == ('barc' if name == 'barc_8b' else 'marc')
  assert run.model.compute_dtype == run.model.param_dtype == 'bfloat16'
  p = _config(name, 'predict')
  p.model.checkpoint_dir = '/ckpt'
  pred = predict.PredictRun.from_config(p)
  assert pred.predict.prompts.d8 == prompts.PAPER_D8 and pred.predict.prompts.orders == 2
  assert pred.predict.decoding == 'greedy' and pred.predict.vote.method == 'hierarchical'


@pytest.mark.parametrize('name', NAMES)
def test_the_combined_config_shares_one_checkpoint_and_needs_it(name):
  c = _config(name, '')
  with pytest.raises(UserError, match=r'^--config\.model\.checkpoint_dir: '):
    ttt.TTTRun.from_config(c.ttt)
  c.checkpoint_dir = '/dl/model'
  assert ttt.TTTRun.from_config(c.ttt).model.checkpoint_dir == '/dl/model'
  assert predict.PredictRun.from_config(c.predict).model.checkpoint_dir == '/dl/model'
