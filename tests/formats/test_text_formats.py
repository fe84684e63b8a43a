"""The paper's text formats: exact prompt strings, token ids, loss masks and parsing.

The golden strings come from the reference code (ekinakyurek/marc) run on real
ARC tasks; the token ids are checked against transformers and against the
reference's own training path (torchtune's tiktoken tokenizer, re-implemented
below from ekinakyurek/torchtune), on the real Llama-3 tokenizer.
"""

import itertools

import numpy as np
import pytest
import tiktoken
import transformers
from tiktoken.load import load_tiktoken_bpe

import format_testlib as fl
from ttt_jax.data import arc
from ttt_jax.formats import load_format, text

# Produced by the reference code itself (ekinakyurek/marc at 95b3348, arclib/messagers.py and
# arclib/representers.py, run outside this repository): GPTTextMessageRepresenterV2.encode with
# predict.py's --new_format representers (marc), GPTTextMessageRepresenterForBarc.encode with its
# --barc_format representers (barc), on the first test pair of each ARC-AGI-1 evaluation task.
GOLDEN = {
    ('66e6c45b', 'marc'): [
        {
            'role': 'system',
            'content': (
                'Figure out the underlying transformation in the following examples and apply it '
                'to the test case. Here are some examples from this transformation, your answer '
                'must follow the format.\n'
                'The input-output grids are provided as python arrays:\n'
                '[[0 0 0 0]\n'
                ' [0 3 4 0]\n'
                ' [0 7 6 0]\n'
                ' [0 0 0 0]] -> [[3 0 0 4]\n'
                ' [0 0 0 0]\n'
                ' [0 0 0 0]\n'
                ' [7 0 0 6]]#\n'
                '[[0 0 0 0]\n'
                ' [0 5 6 0]\n'
                ' [0 8 3 0]\n'
                ' [0 0 0 0]] -> [[5 0 0 6]\n'
                ' [0 0 0 0]\n'
                ' [0 0 0 0]\n'
                ' [8 0 0 3]]#\n'
            ),
        },
        {
            'role': 'user',
            'content': ('[[0 0 0 0]\n' ' [0 2 3 0]\n' ' [0 4 9 0]\n' ' [0 0 0 0]] -> '),
        },
        {
            'role': 'assistant',
            'content': ('[[2 0 0 3]\n' ' [0 0 0 0]\n' ' [0 0 0 0]\n' ' [4 0 0 9]]#'),
        },
    ],
    ('66e6c45b', 'barc'): [
        {
            'role': 'system',
            'content': (
                'You are a world-class puzzle solver with exceptional pattern recognition '
                'skills. Your task is to analyze puzzles, spot patterns, and provide direct '
                'solutions.'
            ),
        },
        {
            'role': 'user',
            'content': (
                'Given input-output grid pairs as reference examples, carefully observe the '
                'patterns to predict the output grid for new test input. Each pair follows the '
                'same transformation rule. Grids are 2D arrays represented as strings, with '
                'cells (colors) separated by spaces and rows by newlines.\n'
                'Here are the input and output grids for the reference examples:\n'
                'Example 1:\n'
                'Input:\n'
                'Black Black Black Black\n'
                'Black Green Yellow Black\n'
                'Black Orange Pink Black\n'
                'Black Black Black Black\n'
                '\n'
                'Output:\n'
                'Green Black Black Yellow\n'
                'Black Black Black Black\n'
                'Black Black Black Black\n'
                'Orange Black Black Pink\n'
                'Example 2:\n'
                'Input:\n'
                'Black Black Black Black\n'
                'Black Gray Pink Black\n'
                'Black Purple Green Black\n'
                'Black Black Black Black\n'
                '\n'
                'Output:\n'
                'Gray Black Black Pink\n'
                'Black Black Black Black\n'
                'Black Black Black Black\n'
                'Purple Black Black Green\n'
                '\n'
                '\n'
                'Here is the input grid for the test example:\n'
                'Input:\n'
                'Black Black Black Black\n'
                'Black Red Green Black\n'
                'Black Yellow Brown Black\n'
                'Black Black Black Black\n'
                '\n'
                '\n'
                'Directly provide the output grids corresponding to the given test input grids, '
                'based on the patterns observed in the reference examples.'
            ),
        },
        {
            'role': 'assistant',
            'content': (
                'The output grid for the test input grid is:\n'
                '\n'
                '```\n'
                'Red Black Black Green\n'
                'Black Black Black Black\n'
                'Black Black Black Black\n'
                'Yellow Black Black Brown\n'
                '```'
            ),
        },
    ],
    ('be03b35f', 'marc'): [
        {
            'role': 'system',
            'content': (
                'Figure out the underlying transformation in the following examples and apply it '
                'to the test case. Here are some examples from this transformation, your answer '
                'must follow the format.\n'
                'The input-output grids are provided as python arrays:\n'
                '[[1 1 0 1 1]\n'
                ' [1 0 0 0 1]\n'
                ' [0 0 0 0 0]\n'
                ' [0 1 0 2 2]\n'
                ' [1 1 0 2 2]] -> [[1 0]\n'
                ' [1 1]]#\n'
                '[[1 0 0 1 1]\n'
                ' [1 1 0 1 0]\n'
                ' [0 0 0 0 0]\n'
                ' [1 1 0 2 2]\n'
                ' [0 1 0 2 2]] -> [[0 1]\n'
                ' [1 1]]#\n'
                '[[1 1 0 0 1]\n'
                ' [0 0 0 0 1]\n'
                ' [0 0 0 0 0]\n'
                ' [0 0 0 2 2]\n'
                ' [1 1 0 2 2]] -> [[1 0]\n'
                ' [1 0]]#\n'
            ),
        },
        {
            'role': 'user',
            'content': (
                '[[1 1 0 0 1]\n'
                ' [0 1 0 1 1]\n'
                ' [0 0 0 0 0]\n'
                ' [1 0 0 2 2]\n'
                ' [1 1 0 2 2]] -> '
            ),
        },
        {
            'role': 'assistant',
            'content': ('[[1 1]\n' ' [1 0]]#'),
        },
    ],
    ('be03b35f', 'barc'): [
        {
            'role': 'system',
            'content': (
                'You are a world-class puzzle solver with exceptional pattern recognition '
                'skills. Your task is to analyze puzzles, spot patterns, and provide direct '
                'solutions.'
            ),
        },
        {
            'role': 'user',
            'content': (
                'Given input-output grid pairs as reference examples, carefully observe the '
                'patterns to predict the output grid for new test input. Each pair follows the '
                'same transformation rule. Grids are 2D arrays represented as strings, with '
                'cells (colors) separated by spaces and rows by newlines.\n'
                'Here are the input and output grids for the reference examples:\n'
                'Example 1:\n'
                'Input:\n'
                'Blue Blue Black Blue Blue\n'
                'Blue Black Black Black Blue\n'
                'Black Black Black Black Black\n'
                'Black Blue Black Red Red\n'
                'Blue Blue Black Red Red\n'
                '\n'
                'Output:\n'
                'Blue Black\n'
                'Blue Blue\n'
                'Example 2:\n'
                'Input:\n'
                'Blue Black Black Blue Blue\n'
                'Blue Blue Black Blue Black\n'
                'Black Black Black Black Black\n'
                'Blue Blue Black Red Red\n'
                'Black Blue Black Red Red\n'
                '\n'
                'Output:\n'
                'Black Blue\n'
                'Blue Blue\n'
                'Example 3:\n'
                'Input:\n'
                'Blue Blue Black Black Blue\n'
                'Black Black Black Black Blue\n'
                'Black Black Black Black Black\n'
                'Black Black Black Red Red\n'
                'Blue Blue Black Red Red\n'
                '\n'
                'Output:\n'
                'Blue Black\n'
                'Blue Black\n'
                '\n'
                '\n'
                'Here is the input grid for the test example:\n'
                'Input:\n'
                'Blue Blue Black Black Blue\n'
                'Black Blue Black Blue Blue\n'
                'Black Black Black Black Black\n'
                'Blue Black Black Red Red\n'
                'Blue Blue Black Red Red\n'
                '\n'
                '\n'
                'Directly provide the output grids corresponding to the given test input grids, '
                'based on the patterns observed in the reference examples.'
            ),
        },
        {
            'role': 'assistant',
            'content': (
                'The output grid for the test input grid is:\n'
                '\n'
                '```\n'
                'Blue Blue\n'
                'Blue Black\n'
                '```'
            ),
        },
    ],
}


@pytest.fixture(scope='module')
def tasks():
  loaded, _ = arc.load_tasks('arc1/eval@ids=66e6c45b,be03b35f,00576224,d4b1c2b1')
  return {t.id: t for t in loaded}


@pytest.mark.parametrize('task_id, name', sorted(GOLDEN))
def test_messages_equal_the_reference_golden_strings(tasks, task_id, name):
  task = tasks[task_id]
  chat = text.SPECS[name].chat(task.train, task.test[0].input, task.test[0].output)
  assert chat.messages == GOLDEN[task_id, name]
  prompt = text.SPECS[name].chat(task.train, task.test[0].input)
  assert prompt.messages == GOLDEN[task_id, name][:-1]


def test_grid_text_is_numpys_print_and_parses_back_for_every_shape_and_colour():
  rng = np.random.default_rng(0)
  for h, w in itertools.product(range(1, 31), range(1, 31)):
    grid = rng.integers(0, 10, (h, w))
    grid[0, 0], grid[-1, -1] = (h * w) % 10, 9 - (h + w) % 10  # every colour across shapes
    assert text.numpy_text(grid) == str(grid)
    np.testing.assert_array_equal(text.parse_numpy_text(text.numpy_text(grid) + '#'), grid)
    np.testing.assert_array_equal(text.parse_word_text(text.word_text(grid)), grid)
    answer = text.BARC_ANSWER.format(grid=text.word_text(grid))
    np.testing.assert_array_equal(text.parse_word_text(answer), grid)


@pytest.mark.parametrize(
    'bad',
    ['', '[[1 2]\n [3]]#', '[[1 2]]]', '[[1 12]]', '[[a]]', '[[1 2] [3 4]]', '[' * 40, '[[-1]]'],
)
def test_malformed_numpy_text_is_invalid(bad):
  assert text.parse_numpy_text(bad) is None


@pytest.mark.parametrize(
    'bad', ['', 'Black Blue\nRed', 'Black Teal', '```\n```', '\n'.join(['Red'] * 31)]
)
def test_malformed_word_text_is_invalid(bad):
  assert text.parse_word_text(bad) is None


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('tok'))
  fl.write_tiny_tokenizer(directory)
  return directory


@pytest.mark.parametrize('name', ['marc', 'barc'])
def test_parse_never_raises_and_budget_bounds_every_answer(tiny_dir, name):
  fmt = load_format(name, tiny_dir)
  rng = np.random.default_rng(1)
  for _ in range(300):  # random ids: a grid or None, never an exception
    grid = fmt.parse_answer(rng.integers(0, fmt.vocab_size, rng.integers(0, 60)))
    assert grid is None or (grid.ndim == 2 and grid.dtype == np.int8 and grid.max() <= 9)
  for _ in range(60):
    grid = rng.integers(0, 10, rng.integers(1, 31, 2))
    tokens, _ = fmt.chat.encode(text.SPECS[name].answer_text(grid))
    assert len(tokens) + 1 <= fmt.answer_tokens(grid.shape)
    answer = np.append(tokens, fmt.stop_ids[0])
    np.testing.assert_array_equal(fmt.parse_answer(answer), grid)


@pytest.mark.parametrize('name', ['marc', 'barc'])
def test_loss_modes_mark_the_chosen_outputs(tasks, tiny_dir, name):
  fmt = load_format(name, tiny_dir)
  task = tasks['be03b35f']  # 3 demonstrations
  x, y = task.test[0].input, task.test[0].output
  prompt, _ = fmt.encode_task(task.train, x)
  targets = {}
  for loss in ('test_only', 'all_but_first', 'all_outputs'):
    tokens, mask = fmt.encode_task(task.train, x, y, loss)
    np.testing.assert_array_equal(tokens[: len(prompt) - 4], prompt[: len(prompt) - 4])
    assert tokens[-1] == fmt.end_of_text and mask[-1] == 0
    targets[loss] = fmt.chat.decode(tokens[mask > 0])
  answer = text.SPECS[name].answer_text(y)
  assert targets['test_only'] == 'assistant\n\n' + answer
  demo = lambda i: (text.numpy_text if name == 'marc' else text.word_text)(task.train[i].output)
  footer = '#' if name == 'marc' else ''
  lead = ' ' if name == 'marc' else ''
  demos = [lead + demo(i) + footer for i in range(3)]
  assert targets['all_but_first'] == ''.join(demos[1:]) + targets['test_only']
  assert targets['all_outputs'] == ''.join(demos) + targets['test_only']
  # Inputs too (torchtune's train_on_input): every token but <|begin_of_text|> and the
  # closing <|end_of_text|>; the paper's names give the same masks as ours.
  tokens, mask = fmt.encode_task(task.train, x, y, 'inputs_too')
  assert mask.tolist() == [0] + [1] * (len(tokens) - 2) + [0]
  for alias, mode in (
      ('no_demonstration_loss', 'test_only'),
      ('demonstration_loss', 'all_but_first'),
  ):
    assert fmt.chat.decode(np.compress(fmt.encode_task(task.train, x, y, alias)[1], tokens)) == (
        targets[mode]
    )


# ------------------------------------------------ the real Llama-3 tokenizer

SEP, CLOSE = 1492, (2, 5062)  # ' ->' and '#' / '#\\n' in Llama-3's vocabulary


def _torchtune_sequence(messages, enc, ids):
  """(tokens, loss_mask) as the reference trained: ekinakyurek/torchtune (branch ekin/llama32)
  Llama3Tokenizer.tokenize_messages with train_on_input=False and unmask_outputs=True, its
  text encoded by tiktoken from tokenizer.model (what torchtune's TikTokenBaseTokenizer does)."""
  encode = lambda s: enc.encode(s, disallowed_special=())
  tokens, masked = [ids['<|begin_of_text|>']], [True]
  for m in messages:
    header = [ids['<|start_header_id|>'], *encode(m['role']), ids['<|end_header_id|>']]
    toks = header + encode('\n\n') + encode(m['content'].strip()) + [ids['<|eot_id|>']]
    if m['role'] == 'system' and 'code' not in m['content']:
      seps = [i for i, t in enumerate(toks) if t == SEP]
      closes = [i for i, t in enumerate(toks) if t in CLOSE]
      mask = [True] * len(toks)
      if len(seps) > 1:
        step = 1 if len(closes) / len(seps) >= 4 else 0
        for s in seps[1:]:
          c = [x for x in closes if x > s][step]
          mask[s + 1 : c + 1] = [False] * (c - s)
    else:
      mask = [m['role'] != 'assistant'] * len(toks)
    tokens, masked = tokens + toks, masked + mask
  tokens, masked = tokens + [ids['<|end_of_text|>']], masked + [True]
  return np.array(tokens), 1 - np.array(masked, np.int32)


@pytest.fixture(scope='module')
def tiktoken_llama3():
  ranks = load_tiktoken_bpe(fl.real_llama3_files()[1])
  return tiktoken.Encoding(
      'llama3', pat_str=fl.LLAMA3_SPLIT, mergeable_ranks=ranks, special_tokens={}
  )


@pytest.mark.parametrize('name, template', [('marc', 'llama3'), ('barc', 'llama31')])
def test_real_llama3_ids_and_masks_equal_the_reference_training_path(
    tasks, tmp_path, tiktoken_llama3, name, template
):
  chat_template = {'llama3': fl.LLAMA3_CHAT_TEMPLATE, 'llama31': fl.LLAMA31_CHAT_TEMPLATE}
  fmt = load_format(name, fl.write_real_llama3(str(tmp_path), chat_template[template]))
  names = ('<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>')
  ids = {t: fmt.chat.token_id(t) for t in (*names, '<|eot_id|>')}
  # The reference's TTT: --new_format with unmask_outputs; --barc_format, whose only target
  # is the answer, with the date lines written into the system prompt by hand.
  loss = 'all_but_first' if name == 'marc' else 'test_only'
  for task in tasks.values():
    x, y = task.test[0].input, task.test[0].output
    messages = text.SPECS[name].chat(task.train, x, y).messages
    if name == 'barc':
      dated = 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n'
      messages = [{**messages[0], 'content': dated + messages[0]['content']}, *messages[1:]]
    want_tokens, want_mask = _torchtune_sequence(messages, tiktoken_llama3, ids)
    tokens, mask = fmt.encode_task(task.train, x, y, loss)
    np.testing.assert_array_equal(tokens, want_tokens, err_msg=task.id)
    np.testing.assert_array_equal(mask, want_mask, err_msg=task.id)


@pytest.mark.parametrize('name', ['marc', 'barc'])
def test_real_llama3_prompt_ids_equal_transformers(tasks, tmp_path, name):
  template = fl.LLAMA3_CHAT_TEMPLATE if name == 'marc' else fl.LLAMA31_CHAT_TEMPLATE
  directory = fl.write_real_llama3(str(tmp_path), template)
  fmt = load_format(name, directory)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  for task in tasks.values():
    messages = text.SPECS[name].chat(task.train, task.test[0].input).messages
    # What the reference's predict.py gives vLLM: the chat template with the generation
    # prompt, its <|begin_of_text|> cut off, which vLLM's encoding adds back (this
    # tokenizer.json has no BOS post-processor, so it is added here).
    rendered = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rendered = rendered[rendered.find('<|begin_of_text|>') + len('<|begin_of_text|>') :]
    bos = reference.convert_tokens_to_ids('<|begin_of_text|>')
    want = [bos, *reference(rendered, add_special_tokens=False)['input_ids']]
    tokens, _ = fmt.encode_task(task.train, task.test[0].input)
    assert tokens.tolist() == list(want), task.id
  assert set(fmt.stop_ids) == {
      reference.convert_tokens_to_ids(t) for t in ('<|eot_id|>', '<|end_of_text|>')
  }


def test_stage1_stream_and_ttt_data_in_a_text_format(tasks, tiny_dir):
  """Stage 1's sequences fit max_len in the text format too (the compact arithmetic is
  checked by encoding), and TTT examples are the format's sequences."""
  from ttt_jax.data import pretrain_data, ttt_data  # pylint: disable=import-outside-toplevel

  fmt = load_format('marc', tiny_dir)
  cfg = pretrain_data.PretrainDataConfig(max_len=700, batch_size=2, bucket_steps=2, pad_multiple=64)
  stream = pretrain_data.PretrainStream(list(tasks.values()), cfg, fmt)
  for step in range(3):
    batch = stream.batch(step)
    assert batch['tokens'].shape[1] <= cfg.max_len
    for tokens, mask, real in zip(batch['tokens'], batch['loss_mask'], batch['mask']):
      assert tokens[0] == fmt.chat.token_id('<|begin_of_text|>')
      assert fmt.chat.decode(tokens[mask > 0]).endswith('#')  # the answer's footer
      assert (tokens[real == 0] == fmt.pad_id).all()
  data_config = ttt_data.TTTDataConfig(max_examples=8, seq_len=2048, augmentations_per_task=2)
  examples, stats = ttt_data.build_ttt_examples(tasks['be03b35f'], data_config, 0, fmt)
  assert stats.num_examples == len(examples) > 0
  for tokens, mask in examples:
    assert tokens[-1] == fmt.end_of_text and mask.sum() > 0
