"""A task's predictions are a function of the task alone (issue: batch dependence).

On the built-in model and real ARC tasks: one task predicted alone must give
the same candidates, log-probabilities, scores and true-output NLL as the same
task inside groups of 2, 4 and 8 with shorter and longer neighbours, for every
decoder. Tolerance: greedy and sampled tokens identical; log-probabilities and
scores within 1e-4 nats per token (float rounding of the different padded
prompt length, cache length and batch composition, nothing more).
"""

import dataclasses

import jax
import numpy as np
import pytest

from ttt_jax.data import arc
from ttt_jax.data import format as fmt
from ttt_jax.infer import decode, predict, prompts
from ttt_jax.model import builtin
from ttt_jax.model.lora import LoraConfig, init_lora

TARGET = 'be03b35f'  # 157 tokens, 2x2 outputs: an answer budget of 31 tokens
# Shorter and longer neighbours (configs/data/arc1_eval_shortest100.txt) with larger budgets.
NEIGHBOURS = ('66e6c45b', '00576224', '4cd1b7b2', 'ca8de6ea', 'e633a9e5', '6ea4a07e', '2072aba6')
LORA = LoraConfig(rank=4, alpha=8.0, targets=('q', 'v', 'gate'))
CONFIG = predict.PredictConfig(
    batch_size=8,
    length_multiple=64,
    max_new_tokens=96,
    score_augmentations=2,
    prompts=prompts.PromptConfig(d8=(0, 1, 4), orders=1, max_variants=6),
)
LOGPROB_ATOL_PER_TOKEN = 1e-4


@pytest.fixture(scope='module')
def model():
  return builtin.load_model('builtin')


@pytest.fixture(scope='module')
def tasks():
  loaded, _ = arc.load_tasks('arc1/eval@ids=' + ','.join((TARGET, *NEIGHBOURS)))
  return {t.id: t for t in loaded}


@pytest.fixture(scope='module')
def adapters_dir(tmp_path_factory, model, tasks):
  """A random non-zero adapter per task, so every row of a batch runs a different model."""
  from ttt_jax import checkpoint

  model_config, _ = model
  root = tmp_path_factory.mktemp('adapters')
  for i, task_id in enumerate(sorted(tasks)):
    lora = init_lora(jax.random.key(i), model_config, LORA)
    lora = jax.tree.map(
        lambda x: x + 0.02 * jax.random.normal(jax.random.key(100 + i), x.shape), lora
    )
    checkpoint.export_peft_adapter(str(root / task_id), lora, LORA, model_config)
  return str(root)


def _target_record(model, tasks, adapters_dir, tmp_path, group, config):
  model_config, params = model
  out = tmp_path / f'{len(group)}_{config.decoding}_{config.tasks_per_group}'
  records = predict.predict_tasks(
      params, model_config, [tasks[i] for i in group], str(out), config, adapters_dir
  )
  return records[TARGET]


def _assert_same_record(alone, other, where):
  assert alone['attempts'] == other['attempts'], where
  for n, (a, b) in enumerate(zip(alone['candidates'], other['candidates'])):
    assert [c['grid'] for c in a] == [c['grid'] for c in b], f'{where}: test {n} grids'
    assert [(c['d8'], c['colors']) for c in a] == [(c['d8'], c['colors']) for c in b], where
    # Every candidate has at most max_new_tokens tokens.
    tol = LOGPROB_ATOL_PER_TOKEN * CONFIG.max_new_tokens
    np.testing.assert_allclose(
        [c['logprob'] for c in a],
        [c['logprob'] for c in b],
        atol=tol,
        rtol=0,
        err_msg=f'{where}: test {n} log-probs',
    )
    np.testing.assert_allclose(
        [c['score'] for c in a],
        [c['score'] for c in b],
        atol=tol,
        rtol=0,
        err_msg=f'{where}: test {n} scores',
    )
  for a, b in zip(alone['details'], other['details']):
    assert a['truth_nll'] == pytest.approx(b['truth_nll'], abs=LOGPROB_ATOL_PER_TOKEN), where


@pytest.mark.parametrize('decoding', ['greedy', 'sample', 'dfs'])
def test_task_alone_equals_task_in_groups_of_2_4_8(model, tasks, adapters_dir, tmp_path, decoding):
  config = dataclasses.replace(CONFIG, decoding=decoding, dfs_threshold=0.02, temperature=1.0)
  alone = _target_record(
      model, tasks, adapters_dir, tmp_path, [TARGET], dataclasses.replace(config, tasks_per_group=1)
  )
  assert sum(len(c) for c in alone['candidates']) > 0
  for size in (2, 4, 8):
    # The target between shorter and longer neighbours, all decoded in one group.
    group = [*NEIGHBOURS[: size // 2], TARGET, *NEIGHBOURS[size // 2 : size - 1]]
    other = _target_record(
        model,
        tasks,
        adapters_dir,
        tmp_path,
        group,
        dataclasses.replace(config, tasks_per_group=size),
    )
    _assert_same_record(alone, other, f'{decoding}: group of {size}')


def test_rows_alone_equal_rows_in_a_batch_token_for_token(model):
  """decode.generate / decode.dfs: a row's tokens do not depend on its batch's other rows,
  their prompt lengths, the batch's padded length or cache length, or its place in it."""
  model_config, params = model
  rng = np.random.default_rng(0)
  prompts_ = [
      np.concatenate([[fmt.INPUT], rng.integers(0, 10, n), [fmt.OUTPUT]]).astype(np.int32)
      for n in (5, 40, 17, 90)
  ]
  budgets = np.array([7, 30, 12, 3], np.int32)
  keys = jax.random.split(jax.random.key(3), 4)
  tokens, lengths = decode.pad_prompts(prompts_, length_multiple=128)
  for sampler in (decode.Greedy(), decode.Sampling(temperature=2.0), decode.Sampling(2.0, 0.9)):
    batched = decode.generate(
        params,
        model_config,
        tokens,
        lengths,
        sampler=sampler,
        rng_B=keys,
        max_new_B=budgets,
        max_new_tokens=32,
    )
    for b in range(4):
      t1, l1 = decode.pad_prompts([prompts_[b]], length_multiple=16)
      alone = decode.generate(
          params,
          model_config,
          t1,
          l1,
          sampler=sampler,
          rng_B=keys[b : b + 1],
          max_new_B=budgets[b : b + 1],
          max_new_tokens=budgets[b],
      )
      n = int(alone.lengths_B[0])
      assert int(batched.lengths_B[b]) == n <= budgets[b]
      np.testing.assert_array_equal(
          np.asarray(batched.tokens_BN[b, :n]), np.asarray(alone.tokens_BN[0, :n])
      )
      assert (np.asarray(batched.tokens_BN[b, n:]) == fmt.PAD).all()
      assert float(batched.logprob_B[b]) == pytest.approx(float(alone.logprob_B[0]), abs=1e-4 * n)
  searched = decode.dfs(
      params, model_config, tokens, lengths, threshold=0.25, max_new_B=budgets, max_new_tokens=32
  )
  for b in range(4):
    t1, l1 = decode.pad_prompts([prompts_[b]], length_multiple=16)
    alone = decode.dfs(
        params,
        model_config,
        t1,
        l1,
        threshold=0.25,
        max_new_B=budgets[b : b + 1],
        max_new_tokens=int(budgets[b]),
    )
    found = np.asarray(alone.found_BK[0])
    np.testing.assert_array_equal(np.asarray(searched.found_BK[b]), found)
    n = int(budgets[b])
    np.testing.assert_array_equal(
        np.asarray(searched.tokens_BKN[b, found, :n]), np.asarray(alone.tokens_BKN[0, found, :n])
    )
    np.testing.assert_allclose(
        np.asarray(searched.logprob_BK[b, found]),
        np.asarray(alone.logprob_BK[0, found]),
        atol=1e-4 * n,
    )
