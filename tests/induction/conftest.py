"""Makes tests/formats/format_testlib.py (tokenizer directories) and this folder's
fake_release.py importable here; `induction_checkpoint`: a tiny random Llama whose
checkpoint carries a BPE tokenizer trained here and the induction checkpoint's chat
template (a model that writes garbage through the real prompt and decoder)."""

import json
import os
import sys

import jax
import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'formats'))

import format_testlib as fl  # pylint: disable=g-import-not-at-top,wrong-import-position
from ttt_jax.model import hf, llama  # pylint: disable=g-import-not-at-top,wrong-import-position
from ttt_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top

with open(os.path.join(HERE, 'data', 'barc_induction_golden.json')) as _f:
  INDUCTION_TEMPLATE = json.load(_f)['chat_template']


@pytest.fixture(scope='session')
def induction_checkpoint(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('induction_ckpt'))
  vocab = fl.write_tiny_tokenizer(directory, INDUCTION_TEMPLATE)
  config = ModelConfig.preset('tiny').replace(vocab_size=vocab)
  hf.save_hf(directory, config, llama.init_params(config, jax.random.key(0)))
  return directory
