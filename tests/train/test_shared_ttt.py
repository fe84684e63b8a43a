"""Shared TTT (the paper's "Shared TTT" arm): one adapter on the pooled data of every task,
its step budget, and predict giving that one adapter to every task."""

import json
import os

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from ttt_jax import checkpoint
from ttt_jax.data import arc
from ttt_jax.data.arc import Pair, Task
from ttt_jax.data.ttt_data import TTTDataConfig, build_ttt_examples
from ttt_jax.dataclass_config import to_config_dict
from ttt_jax.infer import decode, predict, prompts
from ttt_jax.model import builtin
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora
from ttt_jax.train import shared, ttt
from ttt_jax.train.ttt_config import TTTConfig, total_steps

DATA = TTTDataConfig(max_examples=4, seq_len=128, augmentations_per_task=2)
TTT = TTTConfig(lora=LoraConfig(rank=2), epochs=1, batch_size=2)


def _tasks() -> list[Task]:
  rng = np.random.default_rng(0)
  grid = lambda: rng.integers(0, 10, (3, 3)).astype(np.int8)
  pairs = lambda n: tuple(Pair(grid(), grid()) for _ in range(n))
  return [Task(name, pairs(n), pairs(1)) for name, n in (('aaa', 1), ('bbb', 2), ('ccc', 3))]


def _config(selector: str, **run) -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.model = to_config_dict(builtin.ModelSpec(checkpoint_dir='', preset='tiny'))
  c.data = to_config_dict(DATA)
  c.data.selector = selector
  c.ttt = to_config_dict(TTT)
  c.run = to_config_dict(ttt.RunConfig(num_slots=1, checkpoint_every=0, **run))
  return c


def test_step_budgets():
  """'summed' adds the per-task budgets (tasks without rows add nothing), 'one_task' is
  the largest; shared_recipe makes a job over the pool take exactly that many steps."""
  recipe = TTTConfig(epochs=2, batch_size=2)
  rows = [4, 3, 0, 1]  # per task: 2 epochs x ceil(rows / 2) = 4, 4, -, 2
  assert shared.step_budget(rows, recipe, 'summed') == 10
  assert shared.step_budget(rows, recipe, 'one_task') == 4
  capped = TTTConfig(epochs=2, batch_size=2, max_steps=3)
  assert shared.step_budget(rows, capped, 'summed') == 3 + 3 + 2
  for steps in (1, 4, 10, 11):
    assert int(total_steps(8, shared.shared_recipe(recipe, 8, steps))) == steps
  with pytest.raises(ValueError, match='shared_steps'):
    shared.step_budget(rows, recipe, 'mean')


def test_shared_ttt_trains_one_adapter_that_predict_gives_every_task(tmp_path):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  selector = f'dir:{tmp_path / "tasks"}'
  workdir = str(tmp_path / 'work')
  results = ttt.run_ttt(_config(selector, shared_adapter=True), workdir)

  # Exactly one job, trained for the summed per-task budget (each task's rows as run_ttt
  # builds them: seeded by its id).
  rows = [len(build_ttt_examples(t, DATA, ttt.task_seed(t.id) ^ TTT.seed)[0]) for t in tasks]
  budget = sum(int(total_steps(n, TTT)) for n in rows)
  assert len(results) == 1 and results[0].status == 'done' and results[0].steps == budget
  adapters_dir = os.path.join(workdir, 'adapters')
  assert sorted(os.listdir(adapters_dir)) == [shared.SHARED_ID, shared.MANIFEST]
  manifest = shared.read_manifest(adapters_dir)
  assert manifest == {
      'adapter': shared.SHARED_ID,
      'tasks': ['aaa', 'bbb', 'ccc'],
      'budget': 'summed',
      'steps': budget,
  }
  lines = [json.loads(l) for l in open(os.path.join(workdir, ttt.METRICS_FILE))]
  assert [(l['task_id'], len(l['losses'])) for l in lines] == [(shared.SHARED_ID, budget)]

  # predict gives that one adapter to every task ...
  model_config = ModelConfig.preset('tiny')
  tree, _ = checkpoint.load_peft_adapter(os.path.join(adapters_dir, shared.SHARED_ID), model_config)
  adapters, failed = predict.load_adapters(adapters_dir, [t.id for t in tasks], model_config)
  assert failed == {}
  for t in range(len(tasks)):
    _, task_adapter = decode.task_model({}, adapters, t, merge=False)
    jax.tree.map(np.testing.assert_array_equal, task_adapter.lora, tree)
  # A per-task run is not this run: its jobs are refused in the shared run's workdir.
  with pytest.raises(ValueError, match='not a job of this run'):
    ttt.run_ttt(_config(selector), workdir)


@pytest.mark.slow
def test_predict_with_a_shared_adapter_equals_per_task_copies_of_it(tmp_path):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  model_config = ModelConfig.preset('tiny')
  lora_config = LoraConfig(rank=2, alpha=4.0, targets=('q', 'v'))
  lora = jax.tree.map(
      lambda x: x + 0.05, init_lora(jax.random.key(0), model_config, lora_config)
  )  # B != 0
  shared_dir = tmp_path / 'shared'
  checkpoint.export_peft_adapter(shared_dir / shared.SHARED_ID, lora, lora_config, model_config)
  shared.write_manifest(str(shared_dir), [t.id for t in tasks], 'summed', 1)
  for t in tasks:
    checkpoint.export_peft_adapter(tmp_path / 'copies' / t.id, lora, lora_config, model_config)
  config = predict.PredictConfig(
      batch_size=4, max_new_tokens=16, prompts=prompts.PromptConfig(d8=(0,), orders=1)
  )
  model = builtin.ModelSpec(checkpoint_dir='', preset='tiny')
  selector = f'dir:{tmp_path / "tasks"}'
  for name in ('shared', 'copies'):
    run = predict.PredictRun(config, model, selector, str(tmp_path / name))
    predict.run_predict(run, str(tmp_path / f'out_{name}'))
  read = lambda name: [
      json.loads(l) for l in open(tmp_path / f'out_{name}' / predict.ATTEMPTS_FILE)
  ]
  assert read('shared') == read('copies')
