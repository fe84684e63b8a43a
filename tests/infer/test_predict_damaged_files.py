"""Predict among damaged files. A task whose adapter is damaged fails with a one-line
reason naming the file; every other task is predicted exactly as in an undamaged run, and
the report and the demo table show the failure. A disk that fills up during predict ends
the run with one line naming the file it could not write, the last complete
submission.json intact; with space again a rerun resumes. The disk is a real small tmpfs
where the test may mount one (root), else a patched writer raising ENOSPC (tests/conftest)."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
import safetensors.numpy

from ttt_jax import checkpoint, demo
from ttt_jax.data import arc
from ttt_jax.data.arc import Pair, Task
from ttt_jax.errors import DamagedFileError, DiskFullError
from ttt_jax.eval import metrics
from ttt_jax.infer import predict, prompts, vote
from ttt_jax.model import builtin
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, projection_shapes

MODEL = ModelConfig.preset('tiny')
LORA = LoraConfig(rank=2, alpha=4.0, targets=('q', 'v'))
WEIGHTS, CONFIG = checkpoint.ADAPTER_WEIGHTS, checkpoint.ADAPTER_CONFIG
CONFIG_PREDICT = predict.PredictConfig(
    batch_size=4,
    tasks_per_group=3,
    length_multiple=128,
    max_new_tokens=32,
    prompts=prompts.PromptConfig(d8=(0, 4), orders=1, max_variants=2),
)


def _adapter(seed: int, model_config=MODEL, lora_config=LORA) -> dict:
  """A trained-looking adapter (B non-zero), made with numpy: nothing to compile."""
  rng = np.random.default_rng(seed)
  shapes, layers, rank = projection_shapes(model_config), model_config.num_layers, lora_config.rank
  return {
      name: {
          'a': rng.normal(0, 0.1, (layers, shapes[name][0], rank)).astype(np.float32),
          'b': rng.normal(0, 0.05, (layers, rank, shapes[name][1])).astype(np.float32),
      }
      for name in lora_config.targets
  }


def _export(root, task_id: str, seed: int, model_config=MODEL, lora_config=LORA) -> str:
  directory = os.path.join(root, task_id)
  adapter = _adapter(seed, model_config, lora_config)
  checkpoint.export_peft_adapter(directory, adapter, lora_config, model_config)
  return directory


def _load(root, task_ids=('aaa', 'bbb'), zeros=False):
  return predict.load_adapters(str(root), list(task_ids), MODEL, zeros=zeros)


def _assert_failed_naming(failed: dict, task_id: str, path: str, pattern: str):
  assert list(failed) == [task_id]
  reason = failed[task_id]
  assert reason.startswith(f'{path}: ') and '\n' not in reason, reason
  assert re.search(pattern, reason), reason


def _assert_slot(adapters, t: int, want: dict | None):
  for name, ab in adapters.lora.items():
    for key in ('a', 'b'):
      expected = np.zeros_like(ab[key][t]) if want is None else want[name][key]
      np.testing.assert_allclose(ab[key][t], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize('kind', ['truncated', 'zero_length', 'random_bytes', 'missing'])
@pytest.mark.parametrize('file', [WEIGHTS, CONFIG])
def test_a_damaged_adapter_file_fails_its_task_and_names_the_file(tmp_path, damage, file, kind):
  _export(tmp_path, 'aaa', 0)
  path = os.path.join(_export(tmp_path, 'bbb', 1), file)
  damage(path, kind)
  adapters, failed = _load(tmp_path)
  pattern = {
      'missing': r': missing$',
      WEIGHTS: r'not a readable safetensors file \(\d+ bytes: truncated or damaged\?',
      CONFIG: r'not valid JSON \(\d+ bytes: truncated or damaged\?',
  }['missing' if kind == 'missing' else file]
  _assert_failed_naming(failed, 'bbb', path, pattern)
  _assert_slot(adapters, 0, _adapter(0))  # the healthy adapter, exactly
  _assert_slot(adapters, 1, None)  # the failed task's slot: zeros


def _rewrite_tensors(path: str, change) -> None:
  tensors = safetensors.numpy.load_file(path)
  safetensors.numpy.save_file({k: change(v) for k, v in tensors.items()}, path)


def _another_model(directory, **changes):
  shutil.rmtree(directory)
  _export(os.path.dirname(directory), os.path.basename(directory), 1, MODEL.replace(**changes))


def _rank_in_config(directory, rank):
  path = os.path.join(directory, CONFIG)
  config = json.load(open(path))
  json.dump({**config, 'r': rank}, open(path, 'w'))


MISMATCHES = {
    # name: (how to damage bbb's adapter directory, the file named, what the reason says)
    'another_width': (
        lambda d: _another_model(d, hidden_size=64, head_dim=16),
        WEIGHTS,
        r'has shape \(2, 64\), expected \(2, 128\) .*another model or rank',
    ),
    'more_layers': (
        lambda d: _another_model(d, num_layers=5),
        WEIGHTS,
        r'unexpected tensor .*layers\.4\..* for the targets .* a 4-layer base model',
    ),
    'fewer_layers': (
        lambda d: _another_model(d, num_layers=3),
        WEIGHTS,
        r'tensor .*layers\.3\.self_attn\.q_proj\.lora_A\.weight is missing',
    ),
    'rank_in_config': (
        lambda d: _rank_in_config(d, 3),
        WEIGHTS,
        r'has shape \(2, 128\), expected \(3, 128\) \(rank 3 of adapter_config\.json',
    ),
    'rank_not_an_int': (lambda d: _rank_in_config(d, 'eight'), CONFIG, r"field 'r' is 'eight'"),
    'int_dtype': (
        lambda d: _rewrite_tensors(os.path.join(d, WEIGHTS), lambda x: x.astype(np.int32)),
        WEIGHTS,
        r'has dtype int32, not a float dtype',
    ),
    'nan_values': (
        lambda d: _rewrite_tensors(os.path.join(d, WEIGHTS), lambda x: x * np.nan),
        WEIGHTS,
        r'holds NaN or infinite values',
    ),
}


@pytest.mark.parametrize('mismatch', sorted(MISMATCHES))
def test_an_adapter_that_does_not_fit_the_base_model_fails_its_task(tmp_path, mismatch):
  change, file, pattern = MISMATCHES[mismatch]
  _export(tmp_path, 'aaa', 0)
  directory = _export(tmp_path, 'bbb', 1)
  change(directory)
  adapters, failed = _load(tmp_path)
  _assert_failed_naming(failed, 'bbb', os.path.join(directory, file), pattern)
  _assert_slot(adapters, 0, _adapter(0))


def test_the_adapter_of_another_rank_than_its_group_fails(tmp_path):
  for seed, task_id in enumerate(('aaa', 'bbb')):
    _export(tmp_path, task_id, seed)
  odd = _export(tmp_path, 'ccc', 2, lora_config=dataclasses.replace(LORA, rank=4))
  adapters, failed = _load(tmp_path, ('ccc', 'aaa', 'bbb'))  # the odd one first
  _assert_failed_naming(
      failed, 'ccc', os.path.join(odd, CONFIG), r'differs from .*rank=2.*other 2 adapter'
  )
  assert adapters.config == LORA
  _assert_slot(adapters, 1, _adapter(0))


def test_with_zero_adapters_a_damaged_adapter_is_not_a_failure(tmp_path, damage):
  _export(tmp_path, 'aaa', 0)
  damage(os.path.join(_export(tmp_path, 'bbb', 1), WEIGHTS), 'truncated')
  adapters, failed = _load(tmp_path, zeros=True)
  assert failed == {} and adapters.config == LORA
  _assert_slot(adapters, 0, None)
  _assert_slot(adapters, 1, None)


def test_the_error_of_load_peft_adapter_is_a_damaged_file_error(tmp_path, damage):
  path = os.path.join(_export(tmp_path, 'aaa', 0), WEIGHTS)
  damage(path, 'truncated')
  with pytest.raises(DamagedFileError, match='invalid header length|incomplete metadata') as e:
    checkpoint.load_peft_adapter(str(tmp_path / 'aaa'), MODEL)
  assert e.value.path == path


# ---------------------------------------------------------------- end to end


def _tasks():
  rng = np.random.default_rng(3)
  grid = lambda: rng.integers(0, 10, rng.integers(1, 4, 2)).astype(np.int8)
  pairs = lambda n: tuple(Pair(grid(), grid()) for _ in range(n))
  return [
      Task('aaa', pairs(2), pairs(1)),
      Task('bbb', pairs(2), pairs(1)),
      Task('ccc', pairs(2), pairs(2)),
  ]


def _predict(tmp_path, name):
  run = predict.PredictRun(
      CONFIG_PREDICT,
      builtin.ModelSpec(checkpoint_dir='', preset='tiny'),
      f'dir:{tmp_path / "tasks"}',
      adapters_dir=str(tmp_path / 'adapters'),
  )
  out = tmp_path / name
  score = predict.run_predict(run, str(out))
  lines = {json.loads(l)['task_id']: l for l in open(out / predict.ATTEMPTS_FILE)}
  return score, lines, out


def test_predict_goes_on_without_the_damaged_task_and_reports_it(tmp_path, damage):
  tasks = _tasks()
  arc.save_task_dir(tasks, tmp_path / 'tasks')
  for seed, task in enumerate(tasks):
    _export(tmp_path / 'adapters', task.id, seed)
  _, want, _ = _predict(tmp_path, 'undamaged')
  weights = str(tmp_path / 'adapters' / 'bbb' / WEIGHTS)
  shutil.copy(weights, tmp_path / 'good_weights')
  damage(weights, 'truncated')  # as the issue found it: 1000 bytes left

  score, got, out = _predict(tmp_path, 'damaged')
  # The healthy tasks' records, byte for byte (candidates, log-probs, votes, NLLs).
  assert got['aaa'] == want['aaa'] and got['ccc'] == want['ccc']
  record = json.loads(got['bbb'])
  assert record['status'] == 'failed' and record['reason'].startswith(f'{weights}: not a readable')
  submission = metrics.read_submission(out / 'submission.json')  # complete and valid
  assert submission['bbb'] == [{'attempt_1': vote.EMPTY_GRID, 'attempt_2': vote.EMPTY_GRID}]
  report = json.load(open(out / 'report' / 'report.json'))
  assert report['failed_tasks'] == {'bbb': record['reason']} and score.num_tasks == 3
  assert [t['failed'] for t in report['tasks']] == [None, record['reason'], None]
  row = next(l for l in open(out / 'report' / 'report.md') if l.startswith('| bbb '))
  assert f'FAILED: {weights}: not a readable safetensors file' in row
  assert (
      'Failed, not predicted (each scores 0): 1 task(s): bbb.'
      in open(out / 'report' / 'report.md').read()
  )
  # The demo table shows it failed with TTT (the base arm does not need its adapter).
  details = json.load(open(out / 'details.json'))
  table = demo.comparison_table(score, score, {}, {}, details)
  assert '| bbb | - | - -> - | 0.00 | failed |' in table.splitlines()

  # Mended, a rerun predicts the failed task (it is not "done") as the undamaged run did.
  shutil.copy(tmp_path / 'good_weights', weights)
  _, again, _ = _predict(tmp_path, 'damaged')
  assert again == want


def _read(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def test_a_full_disk_names_the_file_and_keeps_the_last_submission(tmp_path, any_small_disk):
  disk = any_small_disk
  arc.save_task_dir(_tasks(), tmp_path / 'tasks')
  out = os.path.join(disk.path, 'predict')
  run = predict.PredictRun(
      CONFIG_PREDICT,
      builtin.ModelSpec(checkpoint_dir='', preset='tiny'),
      f'dir:{tmp_path / "tasks"}',
  )
  predict.run_predict(run, out)
  attempts, submission = (os.path.join(out, f) for f in (predict.ATTEMPTS_FILE, 'submission.json'))
  want_submission, want_lines = _read(submission), _read(attempts).splitlines(keepends=True)

  # The tasks after aaa are to be predicted again, and the disk is full.
  with open(attempts, 'wb') as f:
    f.write(want_lines[0])
  disk.fill()
  with pytest.raises(DiskFullError) as raised:
    predict.run_predict(run, out)
  written = {attempts, submission, os.path.join(out, 'details.json')}
  # The patched disk fails the append at once; a tmpfs may still take a line in the last
  # page of attempts.jsonl, then fails the new submission.json.
  assert raised.value.path in written
  message = str(raised.value)
  assert message.startswith(f'{raised.value.path}: no space left on the device (')
  assert '\n' not in message
  assert _read(submission) == want_submission  # the last complete one, untouched
  assert _read(attempts).startswith(want_lines[0])  # its complete lines kept
  assert not [f for f in os.listdir(out) if f.endswith('.tmp')]

  # Space again: the rerun resumes and ends where an uninterrupted run did.
  disk.free()
  predict.run_predict(run, out)
  assert _read(submission) == want_submission
  records = [json.loads(l) for l in _read(attempts).splitlines() if l.strip().endswith(b'}')]
  assert {r['task_id'] for r in records} == {'aaa', 'bbb', 'ccc'}

  # Nothing left to predict, but no room for the new submission: it names that file.
  disk.fill()
  with pytest.raises(DiskFullError, match=f'^{submission}: no space left on the device'):
    predict.run_predict(run, out)
  assert _read(submission) == want_submission
  assert not [f for f in os.listdir(out) if f.endswith('.tmp')]
