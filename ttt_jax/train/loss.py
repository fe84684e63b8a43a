"""The training loss of stage 1 and TTT: mean cross-entropy over loss-masked targets."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttt_jax.formats.positions import position_ids
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig


def loss_one(
    base_params: Any,
    adapter: Any,
    batch: dict,
    config: ModelConfig,
    lora_config: LoraConfig | None,
    loss_capacity: int | None = None,
    lora_scale: jax.Array | None = None,
) -> jax.Array:
  """Mean cross-entropy over one task's loss-masked target tokens (the base
  model alone when `adapter` is None).

  batch: tokens [B, S] int32, mask [B, S] (real tokens), loss_mask [B, S]
  (token s is a target predicted from tokens < s), optionally segments [B, S]
  (packed rows: each example attends within itself, positions restart per
  example; its first token is never a target, so nothing is predicted across).
  With `loss_capacity` C the LM head runs only on the hidden states of (at
  most C) target positions, gathered into a fixed [C, D] block, instead of all
  B x S; a batch with more than C targets gets a NaN loss (its slot fails)
  rather than a silently truncated one. The TTT scheduler checks the data first.
  `lora_scale` overrides `lora_config.scale` (a traced per-slot value: llama.hidden_states).
  """
  tokens_BS = jnp.asarray(batch['tokens'])
  segments_BS = batch.get('segments')
  h_BSD, _ = llama.hidden_states(
      base_params,
      tokens_BS,
      config,
      positions_BS=position_ids(tokens_BS, config, segments_BS),
      mask_BS=batch['mask'],
      lora=adapter,
      lora_config=lora_config,
      lora_scale=lora_scale,
      segments_BS=segments_BS,
  )
  h_ND = h_BSD[:, :-1].reshape(-1, h_BSD.shape[-1])  # position s predicts token s + 1
  targets_N = tokens_BS[:, 1:].reshape(-1)
  weights_N = jnp.asarray(batch['loss_mask'])[:, 1:].reshape(-1).astype(jnp.float32)
  total_weight = jnp.maximum(jnp.sum(weights_N), 1.0)
  if loss_capacity is None:
    return weighted_cross_entropy(base_params, h_ND, targets_N, weights_N, config) / total_weight
  num_targets = jnp.sum(weights_N != 0)
  (rows_C,) = jnp.nonzero(weights_N != 0, size=loss_capacity, fill_value=0)
  weights_C = jnp.where(jnp.arange(loss_capacity) < num_targets, weights_N[rows_C], 0.0)
  loss = weighted_cross_entropy(base_params, h_ND[rows_C], targets_N[rows_C], weights_C, config)
  return jnp.where(num_targets <= loss_capacity, loss / total_weight, jnp.nan)


# At most this many logits [rows, V] at once (256 MB in float32): a 128k vocabulary over
# thousands of targets is computed in blocks, each recomputed in the backward pass.
LOGITS_BLOCK = 2**26


def weighted_cross_entropy(
    base_params,
    h_ND: jax.Array,
    targets_N: jax.Array,
    weights_N: jax.Array,
    config: ModelConfig,
    block_elements: int = LOGITS_BLOCK,
) -> jax.Array:
  """sum_n weight_n * CE(LM head(h_n), target_n): the LM head only on the rows given."""

  def block_ce(h_RD, targets_R, weights_R):
    logits_RV = llama.logits_from_hidden(base_params, h_RD, config)
    ce_R = optax.softmax_cross_entropy_with_integer_labels(logits_RV, targets_R)
    return jnp.sum(ce_R * weights_R)

  N, rows = h_ND.shape[0], max(1, block_elements // config.vocab_size)
  if N <= rows:
    return block_ce(h_ND, targets_N, weights_N)
  blocks = -(-N // rows)
  pad = lambda x: jnp.pad(x, [(0, blocks * rows - N)] + [(0, 0)] * (x.ndim - 1))
  h_KRD = pad(h_ND).reshape(blocks, rows, -1)
  targets_KR, weights_KR = (pad(x).reshape(blocks, rows) for x in (targets_N, weights_N))
  per_block = jax.checkpoint(block_ce)
  return jnp.sum(jax.lax.map(lambda xs: per_block(*xs), (h_KRD, targets_KR, weights_KR)))


def max_targets_per_batch(loss_mask_NS: np.ndarray, batch_size: int) -> int:
  """An upper bound on the target tokens of any batch of `batch_size` rows."""
  per_row_N = np.count_nonzero(np.asarray(loss_mask_NS)[:, 1:], axis=1)
  return int(np.sort(per_row_N)[::-1][:batch_size].sum())
