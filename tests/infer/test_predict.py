"""The prediction pipeline end to end on tiny tasks and a random tiny model."""

import json
import os

import jax
import numpy as np
import pytest

from ttt_jax import checkpoint
from ttt_jax.data import arc, format as fmt
from ttt_jax.data.arc import Pair, Task
from ttt_jax.errors import UserError
from ttt_jax.eval import metrics
from ttt_jax.infer import predict, prompts, vote
from ttt_jax.formats.compact import CompactFormat
from ttt_jax.infer.candidates import Candidate
from ttt_jax.model import builtin, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

FAST = predict.PredictConfig(
    batch_size=8,
    tasks_per_group=2,
    length_multiple=32,
    max_new_tokens=64,
    prompts=prompts.PromptConfig(d8=(0, 4, 2), orders=1, max_variants=8),
)


def _tasks():
  rng = np.random.default_rng(0)
  grid = lambda: rng.integers(0, 10, rng.integers(1, 4, 2)).astype(np.int8)
  pairs = lambda n: tuple(Pair(grid(), grid()) for _ in range(n))
  return [Task('aaa', pairs(2), pairs(1)), Task('bbb', pairs(3), pairs(2))]


def _write_adapters(root, tasks, model_config):
  lora_config = LoraConfig(rank=2, alpha=4.0, targets=('q', 'v'))
  for i, task in enumerate(tasks):
    lora = init_lora(jax.random.key(i), model_config, lora_config)
    lora = jax.tree.map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.key(10 + i), x.shape), lora
    )
    checkpoint.export_peft_adapter(os.path.join(root, task.id), lora, lora_config, model_config)


def _run_predict(selector, out, config, adapters_dir, zero_adapters=False):
  """run_predict on a random-init tiny model."""
  model = builtin.ModelSpec(checkpoint_dir='', preset='tiny')
  run = predict.PredictRun(
      config, model, selector, adapters_dir=adapters_dir, zero_adapters=zero_adapters
  )
  return predict.run_predict(run, out)


def _candidate(variant, grid):
  return Candidate(variant.task_id, variant.test_index, variant.d8, variant.colors, grid, 0.0)


def test_end_to_end_writes_submission_report_and_rerun_skips_done(tmp_path, monkeypatch):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  _write_adapters(tmp_path / 'adapters', tasks, ModelConfig.preset('tiny'))
  out = str(tmp_path / 'out')
  config = predict.PredictConfig(
      **{
          **FAST.__dict__,
          'score_augmentations': 2,
          'vote': vote.VoteConfig(rank_mode='votes_then_scores'),
      }
  )
  run = lambda: _run_predict(f'dir:{tmp_path / "tasks"}', out, config, str(tmp_path / 'adapters'))
  score = run()
  submission = metrics.read_submission(os.path.join(out, 'submission.json'))
  assert sorted(submission) == ['aaa', 'bbb']
  assert [len(submission[t.id]) for t in tasks] == [1, 2]
  details = json.load(open(os.path.join(out, 'details.json')))
  assert set(details) == {'aaa', 'bbb'} and len(details['bbb']) == 2
  # 3 D8 elements x (original order + 1 random order, which may repeat the original)
  assert all(d['num_candidates'] in (3, 6) for d in details['aaa'])
  assert all(d['truth_nll'] > 0 for t in tasks for d in details[t.id])
  report = json.load(open(os.path.join(out, 'report', 'report.json')))
  assert report['num_tasks'] == 2 and score.num_tasks == 2
  assert os.path.exists(os.path.join(out, 'report', 'report.md'))
  with open(os.path.join(out, predict.ATTEMPTS_FILE)) as f:
    assert [json.loads(line)['task_id'] for line in f] == ['aaa', 'bbb']

  # A re-run decodes nothing; with one task's line gone, only that task is redone.
  calls = []
  real = predict.decode_variants
  monkeypatch.setattr(predict, 'decode_variants', lambda *a: calls.append(a[2]) or real(*a))
  run()
  assert calls == []
  assert metrics.read_submission(os.path.join(out, 'submission.json')) == submission
  path = os.path.join(out, predict.ATTEMPTS_FILE)
  lines = open(path).read().splitlines()
  open(path, 'w').write(lines[0] + '\n')
  run()
  assert {v.task_id for v in calls[0]} == {'bbb'}
  # Greedy decoding is deterministic: the redone task gets the same answer.
  assert metrics.read_submission(os.path.join(out, 'submission.json')) == submission


def test_malformed_outputs_still_give_every_task_an_entry(tmp_path, monkeypatch):
  tasks = _tasks()
  # every output undecodable
  monkeypatch.setattr(CompactFormat, 'parse_answer', lambda self, tokens: None)
  model_config = ModelConfig.preset('tiny')
  params = builtin.load_model('', preset='tiny')[1]
  for decoding in ('greedy', 'dfs'):
    config = predict.PredictConfig(**{**FAST.__dict__, 'decoding': decoding, 'dfs_threshold': 0.3})
    records = predict.predict_tasks(params, model_config, tasks, str(tmp_path / decoding), config)
    for task in tasks:
      entries = records[task.id]['attempts']
      assert len(entries) == len(task.test)
      assert all(e == {'attempt_1': vote.EMPTY_GRID, 'attempt_2': vote.EMPTY_GRID} for e in entries)
      assert all(d['num_valid'] == 0 for d in records[task.id]['details'])


def test_voting_maps_transformed_predictions_back_to_the_truth():
  task = _tasks()[1]
  variants = prompts.input_variants(task, 1, prompts.PromptConfig(color_perms=1, orders=1))
  truth = task.test[1].output
  wrong = np.zeros((2, 2), np.int8)
  cands = [_candidate(v, prompts.transform_grid(truth, v.d8, v.colors)) for v in variants]
  cands += [_candidate(variants[0], wrong), _candidate(variants[1], None)]
  entry, details = predict.vote_test_input(cands, FAST)
  assert entry['attempt_1'] == truth.tolist()
  assert entry['attempt_2'] == wrong.tolist()
  assert details['num_candidates'] == len(cands) and details['num_valid'] == len(cands) - 1
  assert 'identity' in details['found_by'][0]


def test_a_task_without_adapter_gets_the_base_model(tmp_path):
  config = ModelConfig.preset('tiny')
  assert predict.load_adapters(str(tmp_path), ['zzz'], config) == (None, {})
  lora_config = LoraConfig(rank=2, alpha=4.0)
  lora = init_lora(jax.random.key(0), config, lora_config)
  lora = jax.tree.map(lambda x: x + 1.0, lora)  # nonzero B: a real adapter
  checkpoint.export_peft_adapter(str(tmp_path / 'aaa'), lora, lora_config, config)
  adapters, failed = predict.load_adapters(str(tmp_path), ['zzz', 'aaa'], config)
  assert failed == {}  # no adapter at all is not a failure
  stacked, got_config = adapters.lora, adapters.config
  assert got_config == lora_config
  for name, ab in stacked.items():
    np.testing.assert_array_equal(ab['b'][0], 0)  # zzz: B = 0, the base model
    np.testing.assert_allclose(ab['b'][1], lora[name]['b'], rtol=1e-6)


def test_zero_and_merged_adapters_predict_what_their_models_predict(tmp_path):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  _write_adapters(tmp_path / 'adapters', tasks, ModelConfig.preset('tiny'))
  selector = f'dir:{tmp_path / "tasks"}'
  _run_predict(selector, str(tmp_path / 'base'), FAST, '')
  _run_predict(selector, str(tmp_path / 'zero'), FAST, str(tmp_path / 'adapters'), True)
  _run_predict(selector, str(tmp_path / 'tuned'), FAST, str(tmp_path / 'adapters'))
  read = lambda name: metrics.read_submission(str(tmp_path / name / 'submission.json'))
  assert read('zero') == read('base')
  nll = lambda name: [
      d['truth_nll'] for t in tasks for d in json.load(open(tmp_path / name / 'details.json'))[t.id]
  ]
  np.testing.assert_allclose(nll('zero'), nll('base'), rtol=1e-5)
  assert np.max(np.abs(np.subtract(nll('tuned'), nll('base')))) > 1e-4  # the adapters matter

  # Adapters merged into the weights (the default) or run as the LoRA path: the same.
  lora_path = predict.PredictConfig(**{**FAST.__dict__, 'merge_adapters': False})
  _run_predict(selector, str(tmp_path / 'lora_path'), lora_path, str(tmp_path / 'adapters'))
  assert read('lora_path') == read('tuned')
  np.testing.assert_allclose(nll('lora_path'), nll('tuned'), rtol=1e-5)
  # Zero adapters on the LoRA path (the gpu recipes): the base model too.
  zero_path = str(tmp_path / 'zero_lora_path')
  _run_predict(selector, zero_path, lora_path, str(tmp_path / 'adapters'), True)
  assert read('zero_lora_path') == read('base')
  np.testing.assert_allclose(nll('zero_lora_path'), nll('base'), rtol=1e-5)


def test_bad_config_raises_clear_errors():
  with pytest.raises(ValueError, match='decoding'):
    predict.PredictConfig(decoding='beam')
  with pytest.raises(ValueError, match='needs scores'):
    predict.PredictConfig(vote=vote.VoteConfig(rank_mode='scores'))


def test_truth_nll_is_the_mean_token_nll_of_the_true_output_under_the_adapter(tmp_path):
  task = _tasks()[1]
  model_config, params = builtin.load_model('', preset='tiny', warn_random=False)
  _write_adapters(tmp_path, [task], model_config)
  adapter = predict.load_adapters(str(tmp_path), [task.id], model_config)[0].model_kwargs(0)
  lora, lora_config = adapter['lora'], adapter['lora_config']
  tokens, mask = fmt.encode_task(
      task.train, task.test[1].input, task.test[1].output, loss='test_only'
  )
  logits, _ = llama.forward(params, tokens[None], model_config, lora=lora, lora_config=lora_config)
  logp = jax.nn.log_softmax(logits[0, :-1].astype(np.float32), axis=-1)
  token_logp = np.take_along_axis(np.asarray(logp), tokens[1:, None], axis=-1)[:, 0]
  expected = -token_logp[mask[1:] > 0].mean()
  got = predict.truth_nll(params, model_config, task, 1, adapter, FAST)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  base = predict.truth_nll(params, model_config, task, 1, {}, FAST)
  assert abs(base - got) > 1e-4  # the adapter changes it
  unsolved = Task('u', task.train, (Pair(task.test[0].input),))
  assert predict.truth_nll(params, model_config, unsolved, 0, {}, FAST) is None


def test_revote_from_stored_candidates_equals_predicting_with_that_vote(tmp_path):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  selector = f'dir:{tmp_path / "tasks"}'
  _write_adapters(tmp_path / 'adapters', tasks, ModelConfig.preset('tiny'))
  flat = predict.PredictConfig(**{**FAST.__dict__, 'vote': vote.VoteConfig(method='flat')})
  run = lambda config, out: _run_predict(
      selector, str(tmp_path / out), config, str(tmp_path / 'adapters')
  )
  run(FAST, 'hierarchical')
  run(flat, 'flat')
  records = lambda out: predict.read_done(str(tmp_path / out))
  assert all(
      len(r['candidates'][n]) == d['num_candidates']
      for r in records('hierarchical').values()
      for n, d in enumerate(r['details'])
  )

  predict.run_revote(selector, str(tmp_path / 'hierarchical'), str(tmp_path / 'revoted'), flat)
  revoted, decoded = records('revoted'), records('flat')
  assert {t: r['attempts'] for t, r in revoted.items()} == {
      t: r['attempts'] for t, r in decoded.items()
  }
  assert {t: r['details'] for t, r in revoted.items()} == {
      t: r['details'] for t, r in decoded.items()
  }
  assert os.path.exists(tmp_path / 'revoted' / 'report' / 'report.json')

  # Scores were not computed: a score-ranked vote is refused, naming the task.
  by_score = predict.PredictConfig(
      **{**FAST.__dict__, 'score_augmentations': 1, 'vote': vote.VoteConfig(rank_mode='scores')}
  )
  with pytest.raises(ValueError, match='task aaa test 0: vote rank_mode .scores. needs scores'):
    predict.run_revote(selector, str(tmp_path / 'hierarchical'), str(tmp_path / 'x'), by_score)
  with pytest.raises(ValueError, match='has no record of tasks'):
    predict.run_revote(selector, str(tmp_path / 'nowhere'), str(tmp_path / 'y'), flat)


def _stored(d8: int, grid) -> dict:
  """A candidate as attempts.jsonl stores it: `grid` (original frame) as the prompt under
  d8 would have produced it; None for a malformed output."""
  colors = list(prompts.IDENTITY_COLORS)
  moved = None if grid is None else prompts.transform_grid(np.array(grid), d8, colors).tolist()
  return {'d8': d8, 'colors': colors, 'grid': moved, 'logprob': -1.0, 'score': None}


T, W, V = [[1, 2, 3], [4, 5, 6]], [[7, 7]], [[8], [9]]  # T: the true output


# Each array readout compiles its own vote (~3 s on 2 cores): the default suite keeps the
# two with their own plumbing (oracle: the truth; marc: host-side), the rest are slow.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    'vote_config, attempts, solved',
    [
        # V: 3 candidates, W 2, T 1 (only the transpose prompt found it).
        pytest.param(vote.VoteConfig(method='flat'), (V, W), 0, id='flat', marks=SLOW),
        pytest.param(vote.VoteConfig(), (V, W), 0, id='hierarchical', marks=SLOW),
        pytest.param(vote.VoteConfig(method='vanilla'), (W, V), 0, id='vanilla', marks=SLOW),
        pytest.param(
            vote.VoteConfig(method='single', transform='transpose'),
            (T, T),
            1,
            id='transpose',
            marks=SLOW,
        ),
        pytest.param(
            vote.VoteConfig(method='single', transform='flip_ud'), (V, V), 0, id='flip', marks=SLOW
        ),
        pytest.param(vote.VoteConfig(method='oracle'), (T, V), 1, id='oracle'),
        # Each one-candidate category nominates its answer 3 times: V 8, T 4, W 3.
        pytest.param(vote.VoteConfig(method='marc'), (V, T), 1, id='marc'),
    ],
)
def test_readouts_revote_stored_candidates_without_decoding(
    tmp_path, monkeypatch, vote_config, attempts, solved
):
  """--revote_from on an attempts.jsonl written by hand: every readout, no model."""
  rng = np.random.default_rng(0)
  demos = tuple(Pair(rng.integers(0, 9, (2, 3)), rng.integers(0, 9, (2, 3))) for _ in range(2))
  tasks = [
      Task('aaa', demos, (Pair(np.zeros((2, 2), np.int8), np.array(T)),)),
      Task('bbb', demos, (Pair(np.zeros((2, 2), np.int8), np.array(T)),)),
  ]
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  stored = {
      'aaa': [_stored(0, W), _stored(0, W), _stored(0, V), _stored(4, T), _stored(5, V)]
      + [_stored(1, V), _stored(2, None)],
      'bbb': [_stored(0, None), _stored(4, None)],  # nothing well-formed
  }
  (tmp_path / 'pred').mkdir()
  with open(tmp_path / 'pred' / predict.ATTEMPTS_FILE, 'w') as f:
    for task_id, cands in stored.items():
      record = {
          'task_id': task_id,
          'attempts': [{'attempt_1': [[0]], 'attempt_2': [[0]]}],
          'details': [{'votes': [0, 0], 'found_by': [[], []], 'truth_nll': 0.5}],
          'num_variants': len(cands),
          'candidates': [cands],
      }
      f.write(json.dumps(record) + '\n')

  def no_decoding(*args, **kwargs):
    raise AssertionError('a revote decoded')

  monkeypatch.setattr(predict, 'decode_variants', no_decoding)
  monkeypatch.setattr(predict.builtin, 'load_base_model', no_decoding)
  config = predict.PredictConfig(vote=vote_config)
  selector = f'dir:{tmp_path / "tasks"}'
  score = predict.run_revote(selector, str(tmp_path / 'pred'), str(tmp_path / 'out'), config)

  submission = json.loads((tmp_path / 'out' / 'submission.json').read_text())
  assert (submission['aaa'][0]['attempt_1'], submission['aaa'][0]['attempt_2']) == attempts
  assert submission['bbb'] == [{'attempt_1': [[0]], 'attempt_2': [[0]]}]
  assert score.total == solved and score.num_solved == solved
  details = json.loads((tmp_path / 'out' / 'details.json').read_text())['aaa'][0]
  assert (details['num_candidates'], details['num_valid'], details['truth_nll']) == (7, 6, 0.5)
  assert os.path.exists(tmp_path / 'out' / 'report' / 'report.md')


def test_oracle_needs_the_true_outputs(tmp_path):
  task = Task('ccc', _tasks()[0].train, (Pair(np.zeros((2, 2), np.int8)),))  # no test output
  arc.save_task_dir([task], tmp_path / 'tasks')
  oracle = predict.PredictConfig(vote=vote.VoteConfig(method='oracle'))
  with pytest.raises(UserError, match="--config.vote.method: 'oracle' needs the true test"):
    predict.run_revote(f'dir:{tmp_path / "tasks"}', str(tmp_path), str(tmp_path / 'o'), oracle)


def test_the_report_has_every_known_level(tmp_path):
  """predict's report (the demo's too) takes levels from configs/data/*levels.csv."""
  train = _tasks()[0].train
  tasks = [
      Task(i, train, (Pair(np.ones((1, 1), np.int8), np.ones((1, 1), np.int8)),))
      for i in ('66e6c45b', 'e5c44e8f', 'gen-x-1')
  ]
  right = {'attempt_1': [[1]], 'attempt_2': [[1]]}
  records = {t.id: {'attempts': [right], 'details': [{'votes': [1, 1]}]} for t in tasks}
  score = predict.write_outputs(records, tasks, str(tmp_path))
  assert [t.level for t in score.tasks] == ['easy', 'hard', None]
  report = json.loads((tmp_path / 'report' / 'report.json').read_text())
  assert [t['level'] for t in report['tasks']] == ['easy', 'hard', None]
  assert list(report['by_level']) == ['easy', 'hard']
