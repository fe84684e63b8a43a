"""The induction prompt and answer parsing, against golden values made by BARC's own code.

data/barc_induction_golden.json was made OUTSIDE this repository (its `_source` says
how): the messages follow xu3kev/BARC finetune/alignment-handbook/gen_dataset_both.py
make_input_prompt_induction + convert_chat_format_induction (the evaluation path of
gen_test_prompt.py), the rendered strings transformers' apply_chat_template with the
Llama-3.1 chat template of BARC's recipes/barc/config_fft_llama3_induction.yaml, and
the code blocks BARC utils.py parse_code. Tasks: ARC-AGI-1 evaluation 66e6c45b (one
test input) and e345f17b (two test inputs, 4 x 8 grids: rows are not transposed).
"""

import json
import os

import numpy as np
import pytest
import transformers

import format_testlib as fl
from ttt_jax.data import arc
from ttt_jax.formats.induction import (
    InductionPrompt,
    code_blocks,
    induction_messages,
    program_source,
)

GOLDEN = json.load(
    open(os.path.join(os.path.dirname(__file__), 'data', 'barc_induction_golden.json'))
)


@pytest.fixture(scope='module')
def tasks():
  loaded, _ = arc.load_tasks('arc1/eval@ids=' + ','.join(GOLDEN['prompts']))
  return {t.id: t for t in loaded}


@pytest.fixture(scope='module')
def llama31_dir(tmp_path_factory):
  """The real Llama-3 tokenizer.json with the induction checkpoint's chat template."""
  return fl.write_real_llama3(str(tmp_path_factory.mktemp('llama31')), GOLDEN['chat_template'])


def test_messages_equal_barcs_prompt_code(tasks):
  for task_id, golden in GOLDEN['prompts'].items():
    assert induction_messages(tasks[task_id]) == golden['messages'], task_id


def test_rendered_prompt_equals_the_chat_template_character_for_character(tasks, llama31_dir):
  prompt = InductionPrompt.from_checkpoint(llama31_dir)
  for task_id, golden in GOLDEN['prompts'].items():
    assert prompt.render(tasks[task_id]) == golden['rendered'], task_id
  assert 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' in golden['rendered']


def test_prompt_ids_are_what_vllm_gave_barcs_model(tasks, llama31_dir):
  """vLLM tokenized the rendered text with add_special_tokens=True: its own BOS first."""
  reference = transformers.AutoTokenizer.from_pretrained(llama31_dir)
  bos = reference.convert_tokens_to_ids('<|begin_of_text|>')
  for vllm_bos in (True, False):
    prompt = InductionPrompt.from_checkpoint(llama31_dir, vllm_bos=vllm_bos)
    for task_id, golden in GOLDEN['prompts'].items():
      want = reference(golden['rendered'], add_special_tokens=False)['input_ids']
      ids = prompt.encode(tasks[task_id])
      assert ids.tolist() == [bos] * vllm_bos + want, task_id
      assert ids.dtype == np.int32


def test_code_blocks_as_barcs_parse_code():
  for case in GOLDEN['parse_code']:
    assert code_blocks(case['response']) == case['blocks'], case['response']
    assert program_source(case['response']) == (case['blocks'][0] if case['blocks'] else None)


def test_program_of_generated_ids_stops_at_the_first_stop_token(llama31_dir):
  prompt = InductionPrompt.from_checkpoint(llama31_dir)
  answer = (
      "Let's solve it.\n```python\nfrom common import *\n\ndef transform(g):\n    return g\n```"
  )
  ids, _ = prompt.chat.encode(answer)
  eot = prompt.chat.token_id('<|eot_id|>')
  after, _ = prompt.chat.encode('```python\nnot_this()\n```')
  assert prompt.program([*ids, eot, *after]) == (
      'from common import *\n\ndef transform(g):\n    return g'
  )
  assert prompt.program(ids[:-3]) is None  # cut off before the block closes
  assert prompt.program([prompt.chat.vocab_size + 5]) is None  # an id outside the vocabulary
