"""The one-shot GPU suite in its CPU smoke mode: every part runs, the files it leaves are
what a device call brings back, the figures are real numbers, and the exported model is the
one it trained."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.bench import gpu_suite
from ttt_jax.formats.positions import position_ids
from ttt_jax.model import builtin, llama


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp('out'))
  summary, trained = gpu_suite.run(out_dir, str(tmp_path_factory.mktemp('work')), gpu_suite.SMOKE)
  return out_dir, summary, trained


def _finite(*values):
  return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_every_part_ran_and_the_files_fit_a_device_call(suite):
  out_dir, summary, _ = suite
  assert [p for p, _ in gpu_suite.PARTS if 'error' in summary[p]] == []
  files = gpu_suite.out_files(out_dir)
  assert {'summary.json', 'summary.md', 'model/config.json', 'model/ttt_jax.json'} <= set(files)
  assert len(files) <= gpu_suite.MAX_FILES and summary['out_problems'] == []
  assert max(files.values()) <= gpu_suite.MAX_FILE_BYTES
  shards = [f for f in files if f.endswith('.safetensors')]
  assert len(shards) >= 2 and 'model/model.safetensors.index.json' in files  # sharded
  assert all(files[f] <= gpu_suite.SMOKE.shard_bytes for f in shards)
  with open(os.path.join(out_dir, 'summary.json')) as f:
    assert json.load(f)['protocol']['num_tasks'] == 2  # what was written is the final summary
  with open(os.path.join(out_dir, 'summary.md')) as f:
    markdown = f.read()
  assert 'FAILED' not in markdown and all(title in markdown for _, title in gpu_suite.PARTS)
  assert summary['machine']['jax'] == jax.__version__ and summary['machine']['jaxlib']
  assert summary['probes'] == {'blockwise': None, 'xla': None} and summary['attention'] == 'auto'
  assert summary['machine']['doctor'][0].startswith('backend    cpu')
  assert 'attention kernels: blockwise runs, xla runs; (b) and (c) ran attention=auto' in markdown


def test_the_figures_are_finite(suite):
  _, s, _ = suite
  rows = s['mfu']['rows']
  assert {(r['T'], r['mode']) for r in rows} == {
      (t, m) for t in gpu_suite.SMOKE.mfu_tasks for m in ('vmap', 'loop')
  }
  assert all(_finite(r['s/step'], r['tokens/s'], r['TFLOP/s']) and r['s/step'] > 0 for r in rows)
  assert set(s['mfu']['vmap_over_loop']) == {str(t) for t in gpu_suite.SMOKE.mfu_tasks}
  assert _finite(s['decode']['new_tokens_per_s']) and s['decode']['new_tokens_per_s'] > 0
  k = s['kernels']
  assert [(r['rows'], r['attention']) for r in k['rows']] == list(gpu_suite.SMOKE.kernel_pairs)
  assert not k['errors'] and not k['skipped']
  assert all(
      _finite(r['tokens/s'], r['TFLOP/s'], r['fill']) and 0 < r['fill'] <= 1 for r in k['rows']
  )
  packed, unpacked = k['rows']
  assert packed['fill'] > unpacked['fill'] and packed['S'] >= unpacked['S']
  assert _finite(s['sampling']['samples_per_s']) and s['sampling']['samples_per_s'] > 0
  q = s['qlora']['rows']
  assert [r['base'] for r in q] == ['bfloat16', 'nf4'] and all(r['tokens/s'] > 0 for r in q)
  assert q[1]['planned peak GB'] < q[0]['planned peak GB']  # the NF4 base is smaller
  t = s['train']
  assert t['steps_done'] >= 2 and t['steps_done'] <= t['steps_planned']
  assert _finite(t['last_train_loss'], t['val_loss'], t['tokens_per_s'], t['estimate']['step_s'])
  assert t['export']['positions'] == 'grid' and t['export']['max_abs_logit_diff'] == 0.0
  p = s['protocol']
  for arm in ('no_ttt', 'ttt'):
    assert 0 <= p[arm]['pass2'] <= p['num_tasks'] and _finite(p[arm]['nll'])
    assert 0 < p[arm]['candidates'] and p[arm]['well_formed'] <= p[arm]['candidates']
  assert 0 <= p['sign_test']['p'] <= 1 and p['nll_tasks'] == 2


def test_the_exported_model_is_the_trained_one(suite):
  out_dir, _, (config, params) = suite
  spec = builtin.ModelSpec(
      checkpoint_dir=os.path.join(out_dir, gpu_suite.MODEL_DIR),
      param_dtype='bfloat16',
      compute_dtype=config.compute_dtype,
  )
  loaded_config, loaded, _ = builtin.load_base_model(spec)
  assert loaded_config.positions == 'grid' and loaded_config.num_params == config.num_params
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 13, (2, 40)), jnp.int32)
  got, want = (
      llama.forward(p, tokens, c, positions_BS=position_ids(tokens, c))[0]
      for p, c in ((loaded, loaded_config), (params, config))
  )
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  random = llama.init_params(config, jax.random.key(0))
  assert not np.allclose(
      np.asarray(params['embed'], np.float32), random['embed'].astype(np.float32)
  )


def test_out_problems_names_what_a_device_call_would_drop():
  assert gpu_suite.out_problems({'a.json': 10, 'm/b.bin': 10}) == []
  problems = gpu_suite.out_problems(
      {**{f'f{i}': 1 for i in range(8)}, 'big': 2**25, 'a/b/c/d': 1, 'odd name': 1}
  )
  assert len(problems) == 4 and problems[0].startswith('11 files')


def test_the_gpu_sizes_build_valid_configs_and_the_model_fits_three_shards(tmp_path):
  from ttt_jax.infer import predict  # pylint: disable=import-outside-toplevel
  from ttt_jax.model.config import ModelConfig  # pylint: disable=import-outside-toplevel
  from ttt_jax.train import finetune, ttt  # pylint: disable=import-outside-toplevel

  full = gpu_suite.FULL
  run = finetune.FinetuneRun.from_config(gpu_suite.finetune_config(full, 5000))
  assert run.model.preset == 'medium' and run.model.compute_dtype == 'bfloat16'
  assert run.model.param_dtype == 'float32' and run.tasks.train[0] == 'gen:train@slice=0:20000'
  c = gpu_suite.protocol_config(full, builtin.BUILTIN)
  ttt_run, predict_run = ttt.TTTRun.from_config(c.ttt), predict.PredictRun.from_config(c.predict)
  assert ttt_run.selector == predict_run.selector == gpu_suite.SHORTEST100
  assert ttt_run.model.param_dtype == predict_run.model.param_dtype == 'bfloat16'
  # (c) keeps the demo's recipe: only throughput knobs change.
  assert ttt_run.ttt.lora.rank == 16 and ttt_run.ttt.epochs == 2 and ttt_run.ttt.lr == 1e-3
  assert predict_run.predict.prompts.max_variants == 10 and predict_run.predict.prompts.orders == 2
  # The medium model in bf16: 2 summary files + config, sidecar, index + 3 shards = 8.
  config = ModelConfig.preset('medium')
  params = jax.jit(llama.init_params, static_argnums=0)(config, jax.random.key(0))
  gpu_suite.export(str(tmp_path), config, params, full)
  files = gpu_suite.out_files(str(tmp_path))
  assert len(files) == 6 and max(files.values()) < gpu_suite.MAX_FILE_BYTES
