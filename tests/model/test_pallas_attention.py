"""The Pallas kernels ('splash' for TPU, 'pallas_gpu' for GPU) run here in Pallas' interpret
mode through the dispatcher, and agree with the blockwise kernel to 1e-5 in float32 on
values and q, k, v gradients: packed rows of several segments, padding on either side, an
all-padding row, GQA, lengths no block divides; a packed TTT step with each equals the XLA
step. Interpreted they are slow (~4 s a case): one case each runs by default, the rest
are marked slow."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.model.test_attention_dispatch import _rows
from tests.train import ttt_testlib as tl
from tests.train.test_packing import SEQ_LEN, _examples
from ttt_jax.data import ttt_data
from ttt_jax.model import attention_dispatch, pallas_attention
from ttt_jax.train import slots as slot_ops
from ttt_jax.train import ttt_step

TOL = 1e-5
PALLAS = ('splash', 'pallas_gpu')
FAST = ('packed', 4, 2)  # the default suite's case of each kernel


@functools.partial(jax.jit, static_argnames='impl')
def _value_and_grads(q, k, v, valid, segments, cotangent, impl):
  attend = lambda q, k, v: attention_dispatch.attend(
      q, k, v, valid, segments, impl=impl, compute_dtype='float32'
  )
  out, vjp = jax.vjp(attend, q, k, v)
  return out, vjp(cotangent)


CASES = [
    pytest.param(
        kernel,
        kind,
        heads,
        kv_heads,
        marks=() if (kind, heads, kv_heads) == FAST else pytest.mark.slow,
        id=f'{kernel}-{kind}-{heads}/{kv_heads}',
    )
    for kernel in PALLAS
    for kind in ('packed', 'full', 'right', 'left', 'middle_and_empty')
    for heads, kv_heads in ((4, 2), (4, 1), (2, 2))
]


@pytest.mark.parametrize('kernel,kind,heads,kv_heads', CASES)
def test_pallas_kernels_agree_with_blockwise(kernel, kind, heads, kv_heads):
  """Every real query's output and the q, k, v gradients of any loss on real queries; a
  padding query outputs zeros (pallas_attention.py)."""
  rng = np.random.default_rng(0)
  B, S, D = 2, 37, 8  # S: odd, and no block divides it
  q = jnp.asarray(rng.normal(size=(B, S, heads, D)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, S, kv_heads, D)), jnp.float32) for _ in 'kv')
  valid, segments = _rows(kind, B, S)
  segments = None if segments is None else jnp.asarray(segments)
  cotangent = jnp.asarray(rng.normal(size=q.shape) * valid[:, :, None, None], jnp.float32)
  valid = jnp.asarray(valid)
  want, want_grads = _value_and_grads(q, k, v, valid, segments, cotangent, 'blockwise')
  got, got_grads = _value_and_grads(q, k, v, valid, segments, cotangent, kernel)
  real = np.asarray(valid)[:, :, None, None]
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=TOL, rtol=0)
  assert np.all(np.asarray(got)[~np.asarray(valid)] == 0)
  for name, g, w in zip('qkv', got_grads, want_grads):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, w, atol=TOL, rtol=0, err_msg=f'd{name}')
  assert np.abs(np.asarray(want_grads[1])).max() > 0


@pytest.mark.parametrize(
    'seq_len,quantum,largest,want',
    [
        (37, 128, 512, (128, 128)),  # short: one block
        (1000, 128, 512, (512, 1024)),
        (1100, 128, 512, (128, 1152)),  # 1152 = 9 x 128: smaller blocks, not 1536 slots
        (8192, 128, 512, (512, 8192)),
        (2048, 64, 128, (128, 2048)),
        (37, 64, 128, (64, 64)),
    ],
)
def test_block_and_length(seq_len, quantum, largest, want):
  assert pallas_attention.block_and_length(seq_len, quantum, largest) == want


def test_block_sizes_follow_head_dim():
  assert pallas_attention.splash_block(8192, 128) == (512, 8192)
  assert pallas_attention.splash_block(8192, 256) == (256, 8192)
  small, _ = pallas_attention.gpu_blocks(2048, 64)
  large, padded = pallas_attention.gpu_blocks(2048, 128)
  assert (small.block_q, large.block_q, padded) == (128, 64, 2048)
  assert small.has_backward_blocks and large.block_q_dq == large.block_kv_dkv


# Vmapped over slots, as a GPU or TPU runs the step (a pallas_call batched by vmap).
VMAP_TTT = dataclasses.replace(tl.TTT, over_slots='vmap')


def _packed_step(attention_impl: str):
  """Two train steps of two slots (two jobs of one task) on packed rows; (metrics, adapters)."""
  config = tl.MODEL.replace(attention_impl=attention_impl)
  packed = ttt_data.pack_tasks([_examples()], 8, SEQ_LEN, pack=True)
  slots, data = slot_ops.empty_slots(2, 8, SEQ_LEN, config, VMAP_TTT, packed=True)
  for slot in range(2):
    slots, data = slot_ops.place_job(
        slots, data, slot, jax.tree.map(lambda x: x[0], packed), 0, slot, VMAP_TTT.hyper(),
        model_config=config, ttt_config=VMAP_TTT, job_seed=slot,
    )  # fmt: skip
  params = tl.base_params(config)
  for _ in range(2):
    slots, metrics = ttt_step.train_step(
        params, slots, data, model_config=config, ttt_config=VMAP_TTT
    )
  return metrics, slots.lora


@pytest.mark.parametrize('kernel', [pytest.param(k, marks=pytest.mark.slow) for k in PALLAS])
def test_packed_ttt_step_matches_xla(kernel):
  want_metrics, want_lora = _packed_step('xla')
  got_metrics, got_lora = _packed_step(kernel)
  assert np.all(got_metrics['trained'])
  for name in ('loss', 'grad_norm'):
    np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=1e-5, err_msg=name)
  for g, w in zip(jax.tree.leaves(got_lora), jax.tree.leaves(want_lora)):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kernel', [pytest.param(k, marks=pytest.mark.slow) for k in PALLAS])
def test_greedy_decoding_is_unchanged(kernel):
  """Prefill (into an empty cache) runs the named kernel, then the decode steps read the
  cache: right-padded prompts of several lengths continue as with the blockwise kernel."""
  from ttt_jax.infer import decode  # pylint: disable=import-outside-toplevel
  from ttt_jax.model import llama  # pylint: disable=import-outside-toplevel

  config = tl.MODEL.replace(num_heads=4, num_kv_heads=2)
  params = llama.init_params(config, jax.random.key(0), std=0.3)
  lengths = jnp.asarray([23, 9, 40], jnp.int32)
  tokens = np.random.default_rng(0).integers(0, 13, (3, 40))
  tokens = jnp.asarray(np.where(np.arange(40) < np.asarray(lengths)[:, None], tokens, 15))
  want, got = (
      decode.generate(
          params, config.replace(attention_impl=impl), tokens, lengths, max_new_tokens=8,
          stop_ids=(-1,),
      )
      for impl in ('blockwise', kernel)
  )  # fmt: skip
  np.testing.assert_array_equal(got.tokens_BN, want.tokens_BN)
  np.testing.assert_allclose(got.logprob_B, want.logprob_B, atol=1e-5)
