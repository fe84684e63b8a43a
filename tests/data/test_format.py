"""Token format: exact layout, loss masks, decode round trip, vocabulary mapping."""

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ttt_jax.data import format as F
from ttt_jax.formats.stats import token_length_stats
from ttt_jax.data.arc import Pair, Task

A = np.array([[1, 2], [3, 4]])
B = np.array([[5]])
C = np.array([[0, 0, 7]])
D = np.array([[8], [9]])


def test_vocabulary_matches_the_contract():
  assert (F.NEWLINE, F.INPUT, F.OUTPUT, F.BOS, F.EOS, F.PAD) == (10, 11, 12, 13, 14, 15)
  assert F.VOCAB_SIZE == len(F.TOKEN_NAMES) == 16


def test_encode_task_exact_layout_and_masks():
  tokens, mask = F.encode_task([(A, B), (C, D)], B, C, loss='all_but_first')
  I, O, N, E = F.INPUT, F.OUTPUT, F.NEWLINE, F.EOS
  expected = [
      F.BOS,
      I,
      1,
      2,
      N,
      3,
      4,
      N,
      O,
      5,
      N,
      E,
      I,
      0,
      0,
      7,
      N,
      O,
      8,
      N,
      9,
      N,
      E,
      I,
      5,
      N,
      O,
      0,
      0,
      7,
      N,
      E,
  ]
  assert tokens.tolist() == expected
  assert tokens.dtype == np.int32 and mask.shape == tokens.shape
  first_out, second_out, test_out = [9, 10, 11], [18, 19, 20, 21, 22], [27, 28, 29, 30, 31]
  assert np.flatnonzero(mask).tolist() == second_out + test_out
  _, mask_all = F.encode_task([(A, B), (C, D)], B, C, loss='all_outputs')
  assert np.flatnonzero(mask_all).tolist() == first_out + second_out + test_out
  _, mask_test = F.encode_task([(A, B), (C, D)], B, C, loss='test_only')
  assert np.flatnonzero(mask_test).tolist() == test_out
  with pytest.raises(ValueError, match='loss'):
    F.encode_task([(A, B)], B, C, loss='outputs')


def test_inputs_too_and_the_papers_names_for_the_loss_masks():
  tokens, mask = F.encode_task([(A, B), (C, D)], B, C, loss='inputs_too')
  assert mask.tolist() == [0] + [1] * (len(tokens) - 1)  # all but BOS: inputs, markers too
  for alias, mode in (
      ('demonstration_loss', 'all_but_first'),
      ('no_demonstration_loss', 'test_only'),
  ):
    assert F.loss_mode(alias) == mode
    np.testing.assert_array_equal(
        F.encode_task([(A, B), (C, D)], B, C, loss=alias)[1],
        F.encode_task([(A, B), (C, D)], B, C, loss=mode)[1],
    )
  with pytest.raises(ValueError, match='no_demonstration_loss'):  # the message lists them
    F.loss_mode('demonstrations')


def test_prompt_stops_after_output_marker():
  tokens, mask = F.encode_task([Pair(A, B)], C, loss='test_only')
  assert tokens[-1] == F.OUTPUT and tokens[-2] == F.NEWLINE
  assert mask.sum() == 0
  full, _ = F.encode_task([Pair(A, B)], C, D)
  np.testing.assert_array_equal(full[: len(tokens)], tokens)


def test_decode_grid_round_trip_on_random_grids():
  rng = np.random.default_rng(0)
  for _ in range(50):
    g = rng.integers(0, 10, rng.integers(1, 31, 2))
    tokens = F.grid_to_tokens(g)
    np.testing.assert_array_equal(F.decode_grid(tokens), g)
    tail = np.array([F.EOS, 3, F.PAD, F.PAD])  # ignored after EOS
    np.testing.assert_array_equal(F.decode_grid(np.concatenate([tokens, tail])), g)


@pytest.mark.parametrize(
    'tokens',
    [
        [],  # empty
        [F.EOS],  # empty grid
        [1, 2, F.NEWLINE, 3, F.NEWLINE],  # ragged rows
        [1, 2, F.NEWLINE, 3, 4],  # last row not closed
        [F.NEWLINE, F.NEWLINE],  # zero-width rows
        [1, F.INPUT, F.NEWLINE],  # stray marker inside a row
        [1, F.PAD, F.NEWLINE, 1, 2, F.NEWLINE],
        [-1, F.NEWLINE],  # not a token
        [1] * 31 + [F.NEWLINE],  # 31 wide
        [1, F.NEWLINE] * 31,  # 31 tall
    ],
)
def test_decode_grid_malformed_is_none(tokens):
  assert F.decode_grid(np.array(tokens, np.int32)) is None


def test_masked_tokens_decode_to_the_target_grids():
  demos = [Pair(A, B), Pair(C, D), Pair(D, A)]
  tokens, mask = F.encode_task(demos, B, C)
  # Split the masked positions into runs; each run is one target: rows + EOS.
  runs = np.split(np.flatnonzero(mask), np.flatnonzero(np.diff(np.flatnonzero(mask)) > 1) + 1)
  decoded = [F.decode_grid(tokens[r]) for r in runs]
  assert all(tokens[r[-1]] == F.EOS for r in runs)
  assert [d.tolist() for d in decoded] == [D.tolist(), A.tolist(), C.tolist()]


def test_token_length_stats_counts_exact_lengths():
  task = Task('t', (Pair(A, B), Pair(C, D)), (Pair(B, C),))
  stats = token_length_stats([task], budgets=(10, 32, 100))
  tokens, _ = F.encode_task(task.train, B, C)
  assert stats['tasks'] == {
      'count': 1,
      'median': float(len(tokens)),
      'max': len(tokens),
      'fits': {10: 0, 32: 1, 100: 1},
  }
  # Pairs: (A,B) = 1+6+1+2+1, (C,D) = 1+4+1+4+1, (B,C) = 1+2+1+4+1.
  assert stats['pairs'] == {'count': 3, 'median': 11.0, 'max': 11, 'fits': {10: 1, 32: 3, 100: 3}}


def test_shortest_tasks_orders_by_length_then_id():
  long_task = Task('a', (Pair(A, B), Pair(C, D)), (Pair(B, C),))
  short_b = Task('b', (Pair(A, B),), (Pair(B, C),))
  short_c = Task('c', (Pair(A, B),), (Pair(B, C),))
  unsolved = Task('d', (Pair(A, B),), (Pair(B, None),))
  assert F.task_length(long_task) == len(F.encode_task(long_task.train, B, C)[0])
  assert F.shortest_tasks([long_task, short_c, unsolved, short_b], 2) == ['b', 'c']
  assert F.shortest_tasks([long_task, short_c, short_b], 5) == ['b', 'c', 'a']


def _tiny_byte_level_tokenizer(path):
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300,
      special_tokens=['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>'],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tok.train_from_iterator(['Input 0123\nOutput 456789\n', 'I O 12 34'] * 20, trainer)
  tok.save(str(path))
  return tok


def test_pretrained_token_ids_with_a_byte_level_tokenizer(tmp_path):
  path = tmp_path / 'tokenizer.json'
  tok = _tiny_byte_level_tokenizer(path)
  ids = F.pretrained_token_ids(str(path))
  assert len(ids) == F.VOCAB_SIZE == len(set(ids))
  for i in range(10):
    assert tok.decode([ids[i]]) == str(i)
  assert tok.decode([ids[F.NEWLINE]]) == '\n'
  assert tok.decode([ids[F.INPUT]]) == 'I' and tok.decode([ids[F.OUTPUT]]) == 'O'
  assert ids[F.BOS] == tok.token_to_id('<|begin_of_text|>')
  assert ids[F.EOS] == tok.token_to_id('<|eot_id|>')
  assert ids[F.PAD] == tok.token_to_id('<|end_of_text|>')

  multi = list(F.LLAMA3_TOKEN_STRINGS)
  multi[F.INPUT] = 'Input:'
  with pytest.raises(ValueError, match='INPUT'):
    F.pretrained_token_ids(str(path), multi)
  repeated = list(F.LLAMA3_TOKEN_STRINGS)
  repeated[F.PAD] = repeated[F.EOS]
  with pytest.raises(ValueError, match='repeated'):
    F.pretrained_token_ids(str(path), repeated)


def test_bucket_length_two_sizes_per_octave():
  from ttt_jax.data.format import bucket_length  # pylint: disable=import-outside-toplevel

  sizes = sorted({bucket_length(n, 64) for n in range(1, 8193)})
  assert sizes == [64 * k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)]
  for n in range(1, 8193):
    b = bucket_length(n, 64)
    assert n <= b and (b <= 64 or b < 2 * n) and (b <= 128 or b < 1.5 * n)
