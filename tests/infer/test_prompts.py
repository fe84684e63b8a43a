"""Prompt variants: transforms invert, seeds reproduce, caps and length filters hold."""

import jax
import numpy as np
import pytest

from ttt_jax.data import augment
from ttt_jax.data import format as fmt
from ttt_jax.data.arc import Pair, Task
from ttt_jax.infer import prompts


def _task(seed=0, num_train=3, task_id='t0'):
  rng = np.random.default_rng(seed)
  grid = lambda: rng.integers(0, 10, rng.integers(2, 6, 2)).astype(np.int8)
  pairs = lambda n: tuple(Pair(grid(), grid()) for _ in range(n))
  return Task(task_id, pairs(num_train), pairs(2))


@pytest.mark.parametrize('d8', range(8))
def test_transform_then_invert_is_identity_and_matches_augment(d8):
  rng = np.random.default_rng(d8)
  grid = rng.integers(0, 10, (3, 5))
  colors = (0, *(1 + rng.permutation(9)))
  moved = prompts.transform_grid(grid, d8, colors)
  np.testing.assert_array_equal(prompts.invert_grid(moved, d8, colors), grid)
  padded, shape = augment.pad_grid(grid)
  t = augment.Transform(np.int32(d8), np.asarray(colors, np.int32))
  want, want_shape = jax.jit(augment.apply_transform)(padded, shape, t)
  np.testing.assert_array_equal(augment.unpad_grid(want, want_shape), moved)


def test_variants_invert_to_the_true_output():
  task = _task()
  config = prompts.PromptConfig(color_perms=2, orders=1, leave_out=1)
  variants = prompts.task_variants(task, config)
  assert variants[0].is_identity and variants[0].test_index == 0
  assert len({(v.d8, v.colors) for v in variants if v.test_index == 0}) == len(config.d8) * 3
  for v in variants:
    truth = task.test[v.test_index].output
    predicted = prompts.transform_grid(truth, v.d8, v.colors)  # what a perfect model writes
    np.testing.assert_array_equal(prompts.invert_grid(predicted, v.d8, v.colors), truth)
    # The prompt holds exactly the transformed demonstrations in the variant's order.
    x = prompts.transform_grid(task.test[v.test_index].input, v.d8, v.colors)
    pairs = [
        tuple(prompts.transform_grid(g, v.d8, v.colors) for g in task.train[i]) for i in v.demos
    ]
    np.testing.assert_array_equal(v.tokens, fmt.encode_task(pairs, x)[0])
    assert v.tokens[-1] == fmt.OUTPUT
    assert len(v.demos) == 2 and v.colors[0] == 0
    # And through the JAX inverse that voting uses.
    padded, shape = augment.pad_grid(predicted)
    back, back_shape = augment.apply_transform(padded, shape, augment.invert_transform(v.transform))
    np.testing.assert_array_equal(augment.unpad_grid(back, back_shape), truth)


def test_variants_are_deterministic_per_seed_and_differ_across_seeds():
  task = _task()
  make = lambda seed: prompts.task_variants(task, prompts.PromptConfig(color_perms=2, seed=seed))
  key = lambda vs: [(v.d8, v.colors, v.demos, v.tokens.tobytes()) for v in vs]
  assert key(make(0)) == key(make(0))
  assert key(make(0)) != key(make(1))


def test_cap_keeps_identity_first_and_length_filter_drops_long_prompts():
  task = _task()
  capped = prompts.input_variants(task, 0, prompts.PromptConfig(max_variants=5, color_perms=3))
  assert len(capped) == 5 and capped[0].is_identity
  full = prompts.input_variants(task, 0, prompts.PromptConfig())
  budget = min(len(v.tokens) + v.answer_budget for v in full)
  short = prompts.input_variants(task, 0, prompts.PromptConfig(max_len=budget))
  assert 0 < len(short) < len(full)
  assert all(len(v.tokens) + v.answer_budget <= budget for v in short)
  assert prompts.input_variants(task, 0, prompts.PromptConfig(max_len=10)) == []


def test_bad_config_and_task_raise_clear_errors():
  with pytest.raises(ValueError, match='d8'):
    prompts.PromptConfig(d8=(0, 9))
  with pytest.raises(ValueError, match='orders'):
    prompts.PromptConfig(orders=-1)
  with pytest.raises(ValueError, match='t9: no demonstrations'):
    prompts.task_variants(
        Task('t9', (), (Pair(np.zeros((2, 2), np.int8)),)), prompts.PromptConfig()
    )
