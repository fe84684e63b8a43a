"""Product-of-experts re-scoring (the ARChitects, "Product of Experts", 2025).

Each distinct candidate answer of a test input is scored by its log-likelihood
under N augmentations of the task: the transform is applied to the
demonstrations, the test input and the candidate, and the candidate's tokens
(its rows and closing EOS) are scored given the rest. The sum over the N
augmentations (the log of the product of the N "experts'" probabilities) is
the candidate's score, higher is better: pass it to `vote.vote(...,
scores_C=...)` or `vote.rank(...)`. All candidates x augmentations of a test
input run as one batched forward.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.data.format import bucket_length, pad_rows
from ttt_jax.data import augment
from ttt_jax.data.arc import Task
from ttt_jax.formats.base import Format
from ttt_jax.formats.compact import COMPACT
from ttt_jax.formats.positions import position_ids
from ttt_jax.infer import prompts
from ttt_jax.model import llama, row_groups
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig


@functools.partial(jax.jit, static_argnames=('config', 'lora_config', 'capacity', 'group_tokens'))
def target_logprobs(
    params: dict,
    config: ModelConfig,
    tokens_BS: jax.Array,
    lengths_B: jax.Array,
    target_mask_BS: jax.Array,
    *,
    capacity: int,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
    group_tokens: int | None = None,
) -> jax.Array:
  """float32 [B]: sum over targets s (target_mask[s] = 1, s < length) of log p(tokens[s] | < s).

  The LM head runs only on the hidden states that predict a target, at most
  `capacity` of them in the whole batch (a 128k vocabulary makes [B, S, V] logits
  too large to form). The forward runs in groups of rows of at most `group_tokens` tokens
  (model/row_groups.py: on a CPU by default)."""
  B, S = tokens_BS.shape
  mask_BS = jnp.arange(S)[None, :] < lengths_B[:, None]
  h_BSD = row_groups.map_rows(
      lambda tokens, mask, positions: llama.hidden_states(
          params,
          tokens,
          config,
          positions_BS=positions,
          mask_BS=mask,
          lora=lora,
          lora_config=lora_config,
      )[0],
      row_groups.rows_per_group(B, S, group_tokens),
      tokens_BS,
      mask_BS,
      position_ids(tokens_BS, config),
  )
  weight_BS = (target_mask_BS[:, 1:] > 0) & mask_BS[:, 1:]  # position s predicts token s + 1
  (flat_C,) = jnp.nonzero(weight_BS.reshape(-1), size=capacity, fill_value=0)
  used_C = jnp.arange(capacity) < jnp.sum(weight_BS)
  row_C, col_C = flat_C // (S - 1), flat_C % (S - 1)
  logits_CV = llama.logits_from_hidden(params, h_BSD[row_C, col_C], config)
  target_C = tokens_BS[row_C, col_C + 1]
  logp_C = jnp.take_along_axis(jax.nn.log_softmax(logits_CV, axis=-1), target_C[:, None], 1)[:, 0]
  return jax.ops.segment_sum(jnp.where(used_C, logp_C, 0.0), row_C, num_segments=B)


def scoring_transforms(
    task_id: str, test_index: int, num: int, seed: int = 0
) -> list[tuple[int, tuple[int, ...]]]:
  """`num` (d8, colors) augmentations: the identity, then the D8 elements in turn, each
  with a random colour permutation keeping colour 0 (seeded per task and test input)."""
  if num < 1:
    raise ValueError(f'scoring_transforms: num must be >= 1, got {num}')
  rng = np.random.default_rng([seed, zlib.crc32(task_id.encode()), test_index, 1])
  out = [(0, prompts.IDENTITY_COLORS)]
  for i in range(1, num):
    out.append((i % 8, augment.numpy_color_permutation(rng)))
  return out


def scoring_sequences(
    task: Task, test_index: int, candidate: np.ndarray, d8: int, colors, fmt: Format = COMPACT
) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, target mask) of the whole task under (d8, colors) with `candidate` as the
  test output; the mask covers the candidate's answer (and its stop token) only."""
  move = lambda g: prompts.transform_grid(g, d8, colors)
  pairs = [(move(x), move(y)) for x, y in task.train]
  return fmt.encode_task(
      pairs, move(task.test[test_index].input), move(candidate), loss='test_only'
  )


def score_candidates(
    params: dict,
    config: ModelConfig,
    task: Task,
    test_index: int,
    candidates: list[np.ndarray],
    transforms: list[tuple[int, tuple[int, ...]]],
    *,
    lora: dict | None = None,
    lora_config: LoraConfig | None = None,
    length_multiple: int = 64,
    fmt: Format = COMPACT,
) -> np.ndarray:
  """float32 [C]: each candidate's summed log-likelihood over the transforms (one forward
  over C x N rows; rows padded to a bucket_length of `length_multiple` to bound recompiles)."""
  if not candidates:
    return np.zeros((0,), np.float32)
  rows = [
      scoring_sequences(task, test_index, c, d8, colors, fmt)
      for c in candidates
      for d8, colors in transforms
  ]
  lengths = np.array([len(t) for t, _ in rows], np.int32)
  tokens = pad_rows([t for t, _ in rows], length_multiple, fmt.pad_id, round_to=bucket_length)
  targets = pad_rows([m for _, m in rows], length_multiple, 0, round_to=bucket_length)
  capacity = bucket_length(int(targets[:, 1:].sum()), length_multiple)
  logp = target_logprobs(
      params,
      config,
      tokens,
      lengths,
      targets,
      capacity=capacity,
      lora=lora,
      lora_config=lora_config,
  )
  return np.asarray(logp, np.float32).reshape(len(candidates), len(transforms)).sum(axis=1)
