"""The GPU recipes: each config's default plus the numerics of configs/gpu.py, nothing else."""

import dataclasses
import importlib

import pytest

from configs import gpu
from ttt_jax.infer import predict
from ttt_jax.train import finetune, ttt


def _config(name, arg=''):
  return importlib.import_module(f'configs.{name}').get_config(arg)


BF16 = dict(param_dtype=gpu.PARAM_DTYPE, compute_dtype=gpu.COMPUTE_DTYPE)


NO_MERGE = lambda run: dict(predict=dataclasses.replace(run.predict, merge_adapters=False))


@pytest.mark.parametrize(
    'name,run_cls,model_changes,run_changes',
    [
        ('ttt', ttt.TTTRun, BF16, None),
        # the LoRA path on a GPU: no per-task copy of the adapted weights
        ('predict', predict.PredictRun, BF16, NO_MERGE),
        # stage 1 trains the weights: float32 weights, bf16 matmuls
        ('finetune', finetune.FinetuneRun, dict(compute_dtype=gpu.COMPUTE_DTYPE), None),
    ],
)
def test_gpu_recipe_is_the_default_with_gpu_numerics(name, run_cls, model_changes, run_changes):
  default, on_gpu = (run_cls.from_config(_config(name, arg)) for arg in ('', 'gpu'))
  assert on_gpu.model == dataclasses.replace(default.model, **model_changes)
  assert on_gpu.model.attention == 'auto'  # cuDNN on a GPU for bf16
  expected = dataclasses.replace(
      default, model=on_gpu.model, **(run_changes(default) if run_changes else {})
  )
  assert on_gpu == expected
  assert gpu.PARAM_DTYPE == gpu.COMPUTE_DTYPE == 'bfloat16'


def test_unknown_argument_names_the_choices():
  with pytest.raises(ValueError, match="'gpu'"):
    _config('ttt', 'h100')
