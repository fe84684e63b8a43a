"""Grid position ids: the vectorized ids equal a token-by-token reference, the decoder's
stepping equals the ids of the whole sequence (cached decode == full forward), and
sequential positions are exactly Llama's default."""

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data import format as fmt
from ttt_jax.data.arc import Pair
from ttt_jax.formats import positions as P
from ttt_jax.infer import decode
from ttt_jax.infer import grammar as G
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import loss

GRID = ModelConfig.preset('tiny', positions='grid')


def _reference(tokens):
  """The scheme of formats/positions.py written out token by token."""
  out, pair, origin, row, col = [], -1, 0, 0, 0
  for t in tokens:
    if t == fmt.INPUT:
      pair += 1
      start = 1 + P.PAIR_STRIDE * pair
      out.append(start)
      origin, row, col = start + 1, 0, 0
    elif t == fmt.OUTPUT:
      out.append(start + P.GRID_STRIDE)
      origin, row, col = start + P.GRID_STRIDE + 1, 0, 0
    elif t in (fmt.BOS, fmt.PAD):
      out.append(0)
    else:  # a cell, NEWLINE or EOS: its slot in the grid
      out.append(origin + P.ROW_STRIDE * row + col)
      row, col = (row + 1, 0) if t == fmt.NEWLINE else (row, col + 1)
  return np.array(out)


def _task(rng, n=3):
  grid = lambda: rng.integers(0, 10, rng.integers(1, 9, 2))
  return [Pair(grid(), grid()) for _ in range(n)], grid(), grid()


def test_vectorized_ids_equal_the_reference_on_tasks_prompts_and_padding():
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(20):
    pairs, x, y = _task(rng)
    rows += [fmt.encode_task(pairs, x, y)[0], fmt.encode_task(pairs, x)[0]]
  batch = fmt.pad_rows(rows, 64, fmt.PAD)
  got = np.asarray(P.grid_positions(batch))
  for row, tokens in zip(got, batch):
    np.testing.assert_array_equal(row, _reference(tokens))
  # A vertically adjacent pair of cells is ROW_STRIDE apart; a cell and the same cell of
  # the output one GRID_STRIDE apart, in every demonstration.
  tokens = rows[0]
  pos = _reference(tokens)
  first_input_cell = np.flatnonzero(tokens == fmt.INPUT)[0] + 1
  assert pos[first_input_cell] == 2
  assert P.position_ids(tokens[None], ModelConfig.preset('tiny')) is None


def test_cached_decoding_with_grid_positions_equals_the_full_forward():
  params = llama.init_params(GRID, jax.random.key(0), std=0.3)
  rng = np.random.default_rng(1)
  prompts = [fmt.encode_task(*_task(rng, 2)[:2])[0] for _ in range(3)]
  tokens, lengths = decode.pad_prompts(prompts, length_multiple=32)
  # Under the grid grammar (an answer holds cells, NEWLINEs and EOS only: the tokens the
  # decoder's position stepping knows).
  grammar = G.GridGrammar()
  out = decode.generate(params, GRID, tokens, lengths, max_new_tokens=24, grammar=grammar)
  for b, prompt in enumerate(prompts):
    n = int(out.lengths_B[b])
    seq = np.concatenate([prompt, np.asarray(out.tokens_BN[b, :n])])
    logits, _ = llama.forward(
        params, jnp.asarray(seq)[None], GRID, positions_BS=P.grid_positions(seq[None])
    )
    steps = np.arange(len(prompt) - 1, len(seq) - 1)
    state = G.GrammarState.start(np.zeros((1, 2), np.int32))
    for s_, token in zip(steps, seq[len(prompt) :]):
      allowed = np.asarray(G.allowed(grammar, state, GRID.vocab_size))[0]
      assert np.argmax(np.where(allowed, np.asarray(logits[0, s_]), -np.inf)) == token
      state = G.advance(grammar, state, jnp.array([token]))
  # The decoder really uses grid positions: sequential ones give another continuation.
  seq_out = decode.generate(
      params,
      GRID.replace(positions='sequential'),
      tokens,
      lengths,
      max_new_tokens=24,
      grammar=grammar,
  )
  assert not np.array_equal(np.asarray(seq_out.tokens_BN), np.asarray(out.tokens_BN))


def test_the_loss_uses_the_models_positions():
  params = llama.init_params(GRID, jax.random.key(2))
  rng = np.random.default_rng(3)
  pairs, x, y = _task(rng)
  tokens, mask = fmt.encode_task(pairs, x, y)
  batch = {'tokens': tokens[None], 'mask': np.ones((1, len(tokens)), bool), 'loss_mask': mask[None]}
  got = loss.loss_one(params, None, batch, GRID, None)
  logits, _ = llama.forward(
      params, jnp.asarray(tokens)[None], GRID, positions_BS=_reference(tokens)[None]
  )
  logp = jax.nn.log_softmax(logits[0, :-1])
  want = -np.take_along_axis(np.asarray(logp), tokens[1:, None], 1)[:, 0][mask[1:] > 0].mean()
  np.testing.assert_allclose(got, want, rtol=1e-5)
  sequential = loss.loss_one(params, None, batch, GRID.replace(positions='sequential'), None)
  assert abs(float(sequential) - float(got)) > 1e-4
