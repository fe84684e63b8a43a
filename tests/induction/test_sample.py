"""Sampling programs end to end on CPU: a tiny random Llama whose checkpoint carries a BPE
tokenizer trained here and the induction checkpoint's chat template samples through the
real prompt and decoder; the JSON-lines file, resuming after a crash, determinism per
(seed, task, sample index), duplicates marked."""

import dataclasses
import importlib

import numpy as np
import pytest

from ttt_jax.data import arc
from ttt_jax.errors import UserError
from ttt_jax.formats.induction import InductionPrompt
from ttt_jax.induction import sample
from ttt_jax.model import hf
from ttt_jax.model.builtin import ModelSpec

CONFIG = sample.SampleConfig(
    num_samples=5, samples_per_round=2, max_new_tokens=24, batch_size=4, length_multiple=1024
)


@pytest.fixture(scope='module')
def checkpoint(induction_checkpoint):
  return induction_checkpoint


@pytest.fixture(scope='module')
def tasks():
  loaded, _ = arc.load_tasks('arc1/eval@ids=66e6c45b,e345f17b')
  return loaded


def _run(checkpoint, tasks, path, config=CONFIG):
  model_config, params = hf.load_hf(checkpoint)
  prompt = InductionPrompt.from_checkpoint(checkpoint)
  sample.sample_programs(params, model_config, prompt, tasks, str(path), config)
  return sample.read_samples(str(path))


def _fingerprint(samples):
  return {
      t: [(s.index, s.num_tokens, s.finished, s.program, round(s.logprob, 3)) for s in ss]
      for t, ss in samples.items()
  }


def test_samples_every_task_resumes_after_a_crash_and_is_deterministic(checkpoint, tasks, tmp_path):
  run = sample.SampleRun(
      ModelSpec(checkpoint_dir=checkpoint), 'arc1/eval@ids=66e6c45b,e345f17b', CONFIG
  )
  assert sample.run_sampling(run, str(tmp_path)) == ['66e6c45b', 'e345f17b']  # shorter first
  whole = sample.read_samples(str(tmp_path / sample.SAMPLES_FILE))
  assert sorted(whole) == ['66e6c45b', 'e345f17b']
  for samples in whole.values():
    assert [s.index for s in samples] == list(range(CONFIG.num_samples))
    for s in samples:
      # A random model writes garbage: a program or None, never an error.
      assert s.program is None or isinstance(s.program, str)
      assert 1 <= s.num_tokens <= CONFIG.max_new_tokens and np.isfinite(s.logprob)
      assert s.finished or s.num_tokens == CONFIG.max_new_tokens
  assert any(s.num_tokens > 1 for ss in whole.values() for s in ss)

  # A crash: three records kept, the fourth torn mid-line. The rerun redoes the rest in
  # other batches and gets the same samples (a sample depends on seed, task and index).
  lines = (tmp_path / sample.SAMPLES_FILE).read_text().splitlines(keepends=True)
  (tmp_path / 'crashed.jsonl').write_text(''.join(lines[:3]) + lines[3][:20])
  resumed = _run(checkpoint, tasks, tmp_path / 'crashed.jsonl')
  assert _fingerprint(resumed) == _fingerprint(whole)

  # Another seed, other samples (4 of one task: one decode call).
  reseeded = dataclasses.replace(CONFIG, seed=1, num_samples=4)
  other_seed = _run(checkpoint, tasks[:1], tmp_path / 'seed1.jsonl', reseeded)['66e6c45b']
  assert _fingerprint({'t': other_seed}) != _fingerprint({'t': whole['66e6c45b'][:4]})


def test_a_prompt_over_the_limit_is_skipped(checkpoint, tasks, tmp_path):
  config = dataclasses.replace(CONFIG, max_prompt_tokens=1)
  assert _run(checkpoint, tasks, tmp_path / 's.jsonl', config) == {}


def test_identical_programs_name_the_first(tmp_path):
  path = str(tmp_path / 's.jsonl')
  a, b = 'def transform(g):\n    return g', 'def transform(g):\n    return g.T'
  log = sample._Log(path)
  for i, program in enumerate([a, None, b, a]):
    log.write(sample.Sample('t', i, program, 3, True, -1.0))
  log.write(sample.Sample('u', 0, a, 3, True, -1.0))  # another task: its own first
  log.out.close()
  log = sample._Log(path)  # resumed: the marks go on from the file
  log.write(sample.Sample('t', 4, b, 3, True, -1.0))
  log.out.close()
  got = {(s.task_id, s.index): s.duplicate_of for s in sample.iter_samples(path)}
  assert got == {
      ('t', 0): None,
      ('t', 1): None,
      ('t', 2): None,
      ('t', 3): 0,
      ('u', 0): None,
      ('t', 4): 2,
  }


def test_bad_config_values_are_refused():
  for bad in (dict(num_samples=0), dict(temperature=0.0), dict(top_p=1.5), dict(batch_size=0)):
    with pytest.raises(ValueError):
      sample.SampleConfig(**bad)


def test_the_reproduction_config_builds_a_run_and_demands_a_checkpoint():
  c = importlib.import_module('configs.reproduce.barc_induction_8b').get_config('sample')
  with pytest.raises(UserError, match=r'^--config\.model\.checkpoint_dir: '):
    sample.SampleRun.from_config(c)
  c.model.checkpoint_dir = 'hf:barc0/Llama-3.1-ARC-Potpourri-Induction-8B'
  run = sample.SampleRun.from_config(c)
  assert (run.sample.num_samples, run.sample.temperature, run.sample.top_p) == (20_000, 0.8, 1.0)
  assert (run.sample.max_new_tokens, run.sample.max_prompt_tokens) == (1536, 8000)
  assert run.model.param_dtype == 'bfloat16' and run.selector == 'arc1/eval'
  both = importlib.import_module('configs.reproduce.barc_induction_8b').get_config('')
  both.selector = 'arc1/eval@slice=0:4'
  assert both.ensemble.selector == 'arc1/eval@slice=0:4'
