"""run_ttt end to end on two small tasks: adapters, metrics, an lr sweep and a rerun."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import ttt_testlib as tl
from ttt_jax import checkpoint, metric_writer
from ttt_jax.errors import UserError
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import ttt, ttt_step

load_config, write_tasks = tl.load_config, tl.write_tasks


def test_full_config_is_the_papers_recipe():
  config = ttt.TTTRun.from_config(load_config('')).ttt
  assert (
      config.lora.rank,
      config.lora.alpha,
      config.lr,
      config.epochs,
      config.batch_size,
      config.weight_decay,
      config.warmup_frac,
  ) == (128, 16.0, 5e-5, 2, 2, 0.01, 0.1)
  assert set(config.lora.targets) == {'q', 'v', 'o', 'gate', 'up', 'down'}


def test_run_ttt_writes_adapters_and_metrics(tmp_path):
  write_tasks(tmp_path / 'tasks')
  config = load_config('runlocal')
  config.data.selector = f'dir:{tmp_path / "tasks"}'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 128, 4, 2
  config.ttt.epochs, config.ttt.max_steps = 2, 3  # 4 examples: 4 steps, capped at 3
  config.run.num_slots, config.run.lrs, config.run.checkpoint_every = 2, (1e-3, 1e-4), 2
  workdir = str(tmp_path / 'work')
  results = ttt.run_ttt(config, workdir)

  assert sorted((r.task, r.hyper.lr) for r in results) == [
      (0, 1e-4),
      (0, 1e-3),
      (1, 1e-4),
      (1, 1e-3),
  ]
  assert all(r.status == 'done' and r.steps == 3 and r.tokens > 0 for r in results)
  model_config = ModelConfig.preset('tiny')
  for task_id in ('aaa', 'bbb'):
    for lr in ('0.001', '0.0001'):
      lora, lora_config = checkpoint.load_peft_adapter(
          os.path.join(workdir, 'adapters', task_id, f'lr_{lr}'), model_config
      )
      assert lora_config.rank == config.ttt.lora.rank and np.abs(lora['q']['b']).max() > 0
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'ttt_metrics.jsonl'))]
  assert sorted(l['task_id'] for l in lines) == ['aaa', 'aaa', 'bbb', 'bbb']
  assert all(len(l['losses']) == 3 and l['seconds'] >= 0 and l['tokens'] > 0 for l in lines)
  scalars = metric_writer.read_scalars(os.path.join(workdir, metric_writer.TENSORBOARD_DIR))
  aaa = next(l for l in lines if l['task_id'] == 'aaa' and l['hyper']['lr'] == 1e-3)
  assert [v for _, v in scalars['ttt_task/aaa/lr_0.001/loss']] == pytest.approx(aaa['losses'])
  # One row length here (128): its steps' scalars under ttt_step/len_128/.
  assert len(scalars['ttt_step/len_128/loss']) >= 6 and 'ttt_step/len_128/tokens_per_s' in scalars

  # A rerun in the same workdir resumes from the last checkpoint and logs no job twice.
  ttt.run_ttt(config, workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'ttt_metrics.jsonl'))]
  assert sorted(l['job'] for l in lines) == [0, 1, 2, 3]


def test_rerun_trains_only_unfinished_jobs(tmp_path, monkeypatch):
  write_tasks(tmp_path / 'tasks')
  config = load_config('runlocal')
  config.data.selector = f'dir:{tmp_path / "tasks"}'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 128, 4, 2
  config.ttt.max_steps, config.run.num_slots, config.run.checkpoint_every = 2, 1, 0
  workdir = str(tmp_path / 'work')
  first = ttt.run_ttt(config, workdir)
  metrics_path = os.path.join(workdir, 'ttt_metrics.jsonl')
  lines = open(metrics_path).readlines()

  # Everything finished: a rerun trains nothing and hands back the logged results.
  def no_training(*args, **kwargs):
    raise AssertionError('a finished job was trained again')

  monkeypatch.setattr(ttt_step, 'train_step', no_training)
  assert sorted(ttt.run_ttt(config, workdir), key=lambda r: r.job) == first
  monkeypatch.undo()
  same_work = lambda results: [
      dataclasses.replace(r, seconds=0.0) for r in sorted(results, key=lambda r: r.job)
  ]

  # A crash after job 0 (the log holds its line only): the rerun trains job 1 alone.
  open(metrics_path, 'w').writelines(lines[:1] + ['{"task_id": "bbb", "jo'])  # a torn write
  assert same_work(ttt.run_ttt(config, workdir)) == same_work(first)  # job 1 trained anew
  logged = checkpoint.read_log(metrics_path)  # the torn line is skipped, job 1 logged anew
  assert [l['job'] for l in logged] == [0, 1]

  # The log of another run's jobs is refused.
  config.data.selector = f'dir:{tmp_path / "tasks"}@ids=bbb'
  with pytest.raises(ValueError, match='not a job of this run'):
    ttt.run_ttt(config, workdir)


def test_a_rank_and_alpha_sweep_writes_each_adapter_at_its_own_rank(tmp_path, monkeypatch):
  """run.ranks x run.alphas: one job per combination in the same step (rank 4 masked to
  8), each adapter in <task>/<knobs>/ with its own PEFT rank and alpha; a rerun trains
  nothing, and a run with other knobs is refused."""
  write_tasks(tmp_path / 'tasks')
  config = load_config('runlocal')
  config.data.selector = f'dir:{tmp_path / "tasks"}@ids=aaa'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 128, 4, 2
  config.ttt.max_steps, config.run.num_slots, config.run.checkpoint_every = 2, 4, 0
  config.run.ranks, config.run.alphas = (4, 8), (8.0, 16.0)
  workdir = str(tmp_path / 'work')
  first = ttt.run_ttt(config, workdir)

  assert all(r.status == 'done' and r.steps == 2 for r in first)
  assert len({r.tokens for r in first}) == 1 and first[0].tokens > 0  # the same batches
  names = sorted(os.listdir(os.path.join(workdir, 'adapters', 'aaa')))
  assert names == ['alpha_16-rank_4', 'alpha_16-rank_8', 'alpha_8-rank_4', 'alpha_8-rank_8']
  for name in names:
    lora, lora_config = checkpoint.load_peft_adapter(
        os.path.join(workdir, 'adapters', 'aaa', name), ModelConfig.preset('tiny')
    )
    alpha, rank = (float(part.split('_')[1]) for part in name.split('-'))
    assert (lora_config.alpha, lora_config.rank) == (alpha, rank)
    assert lora['q']['a'].shape[-1] == rank and np.abs(lora['q']['b']).max() > 0
  lines = checkpoint.read_log(os.path.join(workdir, 'ttt_metrics.jsonl'))
  assert sorted((l['hyper']['alpha'], l['hyper']['rank']) for l in lines) == [
      (8.0, 4),
      (8.0, 8),
      (16.0, 4),
      (16.0, 8),
  ]
  assert [l['tokens'] for l in lines] == [r.tokens for r in first]

  monkeypatch.setattr(ttt_step, 'train_step', lambda *a, **k: pytest.fail('trained again'))
  assert sorted(ttt.run_ttt(config, workdir), key=lambda r: r.job) == first
  config.run.alphas = (8.0, 32.0)
  with pytest.raises(ValueError, match='not a job of this run'):
    ttt.run_ttt(config, workdir)
  config.run.ranks = (0, 8)
  with pytest.raises(UserError, match='--config.run.ranks: LoraConfig.rank must be'):
    ttt.run_ttt(config, str(tmp_path / 'bad'))
  config.run.ranks, config.run.step_caps, config.run.shared_adapter = (), (2, 4), True
  with pytest.raises(UserError, match='--config.run.step_caps: .* shared adapter'):
    ttt.run_ttt(config, str(tmp_path / 'bad'))


def test_a_tasks_adapter_does_not_depend_on_the_other_tasks_selected(tmp_path):
  write_tasks(tmp_path / 'tasks')
  config = load_config('runlocal')
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 128, 4, 2
  config.ttt.max_steps, config.run.num_slots, config.run.checkpoint_every = 2, 1, 0
  adapters = {}
  for name, subset in (('both', ''), ('alone', '@ids=bbb')):
    config.data.selector = f'dir:{tmp_path / "tasks"}{subset}'
    results = ttt.run_ttt(config, str(tmp_path / name))
    assert [r.status for r in results] in (['done'], ['done', 'done'])
    adapters[name], _ = checkpoint.load_peft_adapter(
        str(tmp_path / name / 'adapters' / 'bbb'), ModelConfig.preset('tiny')
    )
  # bbb is job 1 of the first run and job 0 of the second: same init, data and order.
  for name in adapters['both']:
    for ab in ('a', 'b'):
      np.testing.assert_array_equal(adapters['both'][name][ab], adapters['alone'][name][ab])


def test_tasks_trained_at_their_own_row_length_get_the_same_adapters(tmp_path, monkeypatch):
  """Rows cut to each task's length bucket (the default) change no adapter: the same
  batches, the padding just shorter; each length streams with its own checkpoints."""
  rng = np.random.default_rng(1)
  os.makedirs(tmp_path / 'tasks')
  for name, side in (('small', 2), ('large', 7)):
    pairs = []
    for _ in range(3):
      grid = rng.integers(0, 10, (side, side)).tolist()
      pairs.append({'input': grid, 'output': np.flipud(grid).tolist()})
    with open(tmp_path / 'tasks' / f'{name}.json', 'w') as f:
      json.dump({'train': pairs[:2], 'test': pairs[2:]}, f)
  config = load_config('runlocal')
  config.data.selector = f'dir:{tmp_path / "tasks"}'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 256, 4, 2
  config.ttt.max_steps, config.run.num_slots, config.run.checkpoint_every = 2, 2, 1
  adapters = {}
  for bucket in (0, 128):
    config.data.length_bucket = bucket
    workdir = tmp_path / f'bucket_{bucket}'
    assert [r.status for r in ttt.run_ttt(config, str(workdir))] == ['done', 'done']
    adapters[bucket] = {
        name: checkpoint.load_peft_adapter(
            str(workdir / 'adapters' / name), ModelConfig.preset('tiny')
        )[0]
        for name in ('small', 'large')
    }
    assert sorted(os.listdir(workdir / 'checkpoints')) == (
        ['len_256'] if bucket == 0 else ['len_128', 'len_256']
    )
  # A rerun trains no length again (every group's jobs are in ttt_metrics.jsonl).
  monkeypatch.setattr(ttt_step, 'train_step', lambda *a, **k: pytest.fail('trained again'))
  assert [r.status for r in ttt.run_ttt(config, str(workdir))] == ['done', 'done']
  monkeypatch.undo()
  for name in ('small', 'large'):
    for path, got in jax.tree_util.tree_flatten_with_path(adapters[128][name])[0]:
      want = adapters[0][name]
      for key in path:
        want = want[key.key]
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=f'{name} {path}')


def test_the_marc_recipe_runs_through_run_ttt(tmp_path):
  """--config.data.recipe=marc: the reference's TTT data (tests/data/test_marc_ttt_data.py)."""
  write_tasks(tmp_path / 'tasks')
  config = load_config('runlocal')
  config.data.selector = f'dir:{tmp_path / "tasks"}'
  config.data.seq_len, config.data.max_examples, config.data.recipe = 128, 4, 'marc'
  config.ttt.max_steps, config.run.num_slots, config.run.checkpoint_every = 2, 1, 0
  results = ttt.run_ttt(config, str(tmp_path / 'work'))
  assert [(r.status, r.steps) for r in results] == [('done', 2), ('done', 2)]
  assert sorted(os.listdir(tmp_path / 'work' / 'adapters')) == ['aaa', 'bbb']
