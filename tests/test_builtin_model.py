"""The shipped built-in model: it loads, it has learned ARC structure, and one
TTT step and one prediction run on it end to end."""

import importlib.util
import json
import os

import jax.numpy as jnp
import numpy as np

from ttt_jax.data import arc, format as fmt
from ttt_jax.infer import predict
from ttt_jax.model import builtin
from ttt_jax.train import ttt
from ttt_jax.train import loss

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')
TASK = '66e6c45b'  # an easy ARC-AGI-1 evaluation task, 130 tokens


def load_config(name, arg):
  spec = importlib.util.spec_from_file_location(
      f'{name}_config', os.path.join(CONFIGS, f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def mean_target_loss(config, params, tasks):
  losses = []
  for task in tasks:
    tokens, mask = fmt.encode_task(task.train, task.test[0].input, task.test[0].output)
    batch = {
        'tokens': jnp.asarray(tokens)[None],
        'mask': jnp.ones((1, len(tokens)), jnp.int32),
        'loss_mask': jnp.asarray(mask)[None],
    }
    losses.append(float(loss.loss_one(params, None, batch, config, None)))
  return float(np.mean(losses))


def test_builtin_model_loads_and_beats_random_init():
  config, params, _ = builtin.load_base_model(builtin.ModelSpec())
  assert config.vocab_size == fmt.VOCAB_SIZE and config.positions == 'grid'  # its ttt_jax.json
  # Training tasks it saw in stage 1: a trained model predicts their outputs
  # far better than the same architecture at random init (~ln 16 = 2.77).
  tasks, _ = arc.load_tasks('arc1/train@slice=0:8')
  tasks = [t for t in tasks if len(fmt.task_sequences(t)[0][0]) <= 1024]
  _, random_params = builtin.load_model('', preset='tiny', warn_random=False)  # same config
  trained, untrained = mean_target_loss(config, params, tasks), mean_target_loss(
      config, random_params, tasks
  )
  assert trained < 0.7 * untrained, (trained, untrained)


def test_one_ttt_step_and_one_prediction_on_the_builtin_model(tmp_path):
  config = load_config('ttt', 'runlocal')
  config.model.checkpoint_dir = 'builtin'
  config.data.selector = f'arc1/eval@ids={TASK}'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 256, 4, 2
  config.ttt.max_steps, config.run.num_slots = 1, 1
  workdir = str(tmp_path / 'ttt')
  (result,) = ttt.run_ttt(config, workdir)
  assert result.status == 'done' and result.steps == 1 and np.isfinite(result.losses[0])

  c = load_config('predict', 'runlocal')
  c.selector, c.model.checkpoint_dir = config.data.selector, 'builtin'
  out = str(tmp_path / 'predict')
  score = predict.run_from_config(c, out, adapters_dir=os.path.join(workdir, 'adapters'))
  assert score is not None and score.num_tasks == 1 and 0.0 <= score.total <= 1.0
  submission = json.load(open(os.path.join(out, 'submission.json')))
  assert set(submission) == {TASK} and len(submission[TASK]) == 1
  assert {'attempt_1', 'attempt_2'} <= set(submission[TASK][0])
