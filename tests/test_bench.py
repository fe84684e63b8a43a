"""The benchmarks' pieces: FLOP counting, peak table, report output, and tiny
runs of the MFU and HF-peer benches (numbers not asserted, only their sense:
tests never assert on wall-clock time)."""

import json

import pytest

from ttt_jax.bench import mfu, report
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig

TINY = ModelConfig.preset('tiny')


def test_flops_by_hand():
  # One layer, D 8, F 16, 2 heads of 4, 1 kv head, vocab 10.
  config = TINY.replace(
      vocab_size=10,
      hidden_size=8,
      intermediate_size=16,
      num_layers=1,
      num_heads=2,
      num_kv_heads=1,
      head_dim=4,
  )
  lora = LoraConfig(rank=2, targets=('q', 'down'))
  flops = mfu.ttt_step_flops(config, lora, num_tasks=3, batch_size=2, seq_len=5)
  tokens = 3 * 2 * 5
  weights = 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16 + 8 * 10  # q k v o gate up down, head
  assert flops.base == 4 * weights * tokens  # forward + dX only
  assert flops.attention == 3 * (2 * 2 * 5 * 4 * 2 * tokens / 2)
  assert flops.lora == 3 * 2 * tokens * 2 * ((8 + 8) + (16 + 8))
  assert flops.total == flops.base + flops.attention + flops.lora


def test_flops_scale_linearly_in_tasks_and_batch():
  lora = LoraConfig(rank=8)
  one = mfu.ttt_step_flops(TINY, lora, 1, 2, 256).total
  assert mfu.ttt_step_flops(TINY, lora, 8, 2, 256).total == pytest.approx(8 * one)
  assert mfu.ttt_step_flops(TINY, lora, 1, 4, 256).total == pytest.approx(2 * one)


def test_peak_flops_table_and_override():
  assert mfu.peak_flops('NVIDIA H100 80GB HBM3') == 989e12
  assert mfu.peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
  assert mfu.peak_flops('cpu') is None
  assert mfu.peak_flops('cpu', override=1e12) == 1e12


def test_report_prints_table_and_writes_json(tmp_path, capsys):
  out = tmp_path / 'sub' / 'r.json'
  rows = [{'name': 'a', 'x': 1.23456, 'big': 3e9}, {'name': 'b', 'x': None, 'big': 1.0}]
  result = report.report('Title', rows, out=str(out), note='hi')
  printed = capsys.readouterr().out
  assert '| name | x | big |' in printed and '| a | 1.235 | 3.000e+09 |' in printed
  assert '| b |  | 1 |' in printed and 'note: hi' in printed
  saved = json.loads(out.read_text())
  assert (
      saved['rows'] == rows
      and saved['note'] == 'hi'
      and saved == json.loads(json.dumps(result, default=str))
  )
  assert saved['machine']['num_devices'] >= 1 and saved['machine']['cpu_count'] >= 1


def test_mfu_bench_runs_on_cpu_with_a_tiny_shape(tmp_path):
  config = {'num_layers': 1}
  result = mfu.bench_mfu(
      'tiny',
      num_tasks=(1, 2),
      batch_size=1,
      seq_len=32,
      rank=4,
      vocab_size=None,
      compute_dtype='float32',
      param_dtype='float32',
      remat='none',
      steps=1,
      peak=1e12,
      config_overrides=config,
      out=str(tmp_path / 'mfu.json'),
  )
  rows = result['rows']
  assert [(r['T'], r['mode']) for r in rows] == [(1, 'vmap'), (1, 'loop'), (2, 'vmap'), (2, 'loop')]
  for r in rows:
    assert r['s/step'] > 0
    assert r['MFU'] == pytest.approx(r['TFLOP/s'] * 1e12 / 1e12)
    assert r['TFLOP/s'] == pytest.approx(r['TFLOP/step'] / r['s/step'])
  assert rows[2]['TFLOP/step'] == pytest.approx(2 * rows[0]['TFLOP/step'])
  assert (tmp_path / 'mfu.json').exists()


def test_hf_peer_does_the_same_work(tmp_path):
  pytest.importorskip('peft')
  from ttt_jax.bench import hf_peer  # pylint: disable=import-outside-toplevel

  result = hf_peer.bench_vs_hf(
      num_tasks=1,
      batch_size=2,
      seq_len=32,
      steps=1,
      rank=4,
      check_steps=2,
      torch_threads=1,
      rounds=2,
      out=str(tmp_path / 'hf.json'),
  )
  check = result['check']
  assert check['adapter_max_abs_diff'] <= 1e-4
  assert check['first_loss_max_abs_diff'] <= 1e-4
  assert check['b_grad_max_rel_diff'] <= 1e-3
  assert [r['method'] for r in result['rows']] == ['hf', 'vmap', 'map', 'loop']
  assert all(r['tokens/s'] > 0 for r in result['rows'])
  assert all(len(s) == 2 for s in result['seconds_per_round'].values())
  hf_row, vmap_row = result['rows'][:2]
  assert hf_row['vs hf (median)'] == 1.0
  assert vmap_row['GFLOP/s'] == pytest.approx(
      result['step_flops'] / vmap_row['s/step (T tasks)'] / 1e9
  )
  assert result['matmul_peak_flops'] > 0


def test_interleaved_rotates_and_ratios_are_per_round():
  from ttt_jax.bench import interleave  # pylint: disable=import-outside-toplevel

  calls = []
  # 'a' is slow in round 1 only (a loaded minute): its per-round ratio shows it, the
  # median does not move.
  times = {'a': iter([1.0, 4.0, 1.0]), 'b': iter([2.0, 8.0, 2.0])}
  runs = {name: (lambda n=name: calls.append(n) or next(times[n])) for name in times}
  seconds = interleave.interleaved(runs, rounds=3)
  assert calls == ['a', 'b', 'b', 'a', 'a', 'b']
  assert seconds == {'a': [1.0, 4.0, 1.0], 'b': [2.0, 8.0, 2.0]}
  stats = interleave.ratio_stats(seconds, 'b')
  assert stats['a'] == {'median_s': 1.0, 'ratio_median': 2.0, 'ratio_min': 2.0, 'ratio_max': 2.0}
  assert stats['b']['ratio_median'] == 1.0


def test_decode_bench_runs_interleaved(tmp_path):
  pytest.importorskip('transformers')
  from ttt_jax.bench import decode  # pylint: disable=import-outside-toplevel

  result = decode.benchmark_decode(
      'tiny',
      batch=2,
      prompt_len=16,
      new_tokens=4,
      num_tasks=2,
      rounds=2,
      out=str(tmp_path / 'decode.json'),
  )
  assert set(result['results']) == set(result['seconds_per_round'])
  assert all(len(s) == 2 for s in result['seconds_per_round'].values())
  assert result['results'][decode.HF]['vs_generate'] == 1.0
  assert all(r['new_tokens_per_s'] > 0 for r in result['results'].values())


# A stand-in for BARC's execution.py (which stays outside this repository): the contract
# of its multi_execute_transformation, run in-process, failing one program on purpose.
_STAND_IN_EXECUTION = """
import numpy as np

def multi_execute_transformation(sources, input_grids, random_seeds, timeout, function_name, num_workers):
    outputs = []
    for source, grid in zip(sources, input_grids):
        if 'recolor' in source:
            outputs.append('error')
            continue
        namespace = {}
        exec(source, namespace)
        outputs.append(namespace[function_name](np.array(grid)))
    return outputs
"""
# Seed-style programs (function main; grid[x, y] with x the column) for three training tasks.
_SEEDS = {
    '3c9b0459.py': 'def main(input_grid):\n    return input_grid[::-1, ::-1]\n',  # a half turn
    '67a3c6ac.py': 'def main(input_grid):\n    return input_grid[::-1, :]\n',  # mirror left-right
    'c8f0f002.py': (
        'def main(input_grid):  # recolor orange to grey\n'
        '    out = input_grid.copy()\n    out[out == 7] = 5\n    return out\n'
    ),
}


def test_execution_bench_against_a_stand_in_barc_executor(tmp_path, capsys):
  import sys  # pylint: disable=import-outside-toplevel

  from ttt_jax.bench import execution  # pylint: disable=import-outside-toplevel

  barc = tmp_path / 'barc'
  (barc / 'seeds').mkdir(parents=True)
  (barc / 'execution.py').write_text(_STAND_IN_EXECUTION)
  for name, source in _SEEDS.items():
    (barc / 'seeds' / name).write_text(source)
  out = tmp_path / 'bench.json'
  result = execution.bench_execution(
      str(barc / 'seeds'), [1], 1, barc_dir=str(barc), barc_python=sys.executable, out=str(out)
  )
  assert [r['executor'] for r in result['rows']] == ['ours (1 workers)', execution.BARC]
  assert all(r['executions/s'] > 0 for r in result['rows'])
  check = result['library_check']
  assert check['seeds'] == 3 and check['solved_with_our_common'] == 3
  assert check['solved_with_barc_common'] == 2 and list(check['differ']) == ['c8f0f002.py']
  assert 'BARC: error' in check['differ']['c8f0f002.py']['barc']
  assert json.loads(out.read_text())['executions'] == result['executions']
  assert '| ours (1 workers) |' in capsys.readouterr().out


@pytest.mark.slow
def test_sampling_bench_runs_every_way():
  from ttt_jax.bench import sample  # pylint: disable=import-outside-toplevel

  result = sample.benchmark_sampling(
      batch=4, prompt_len=16, new_tokens=2, num_tasks=2, vocab_size=32, rounds=1
  )
  assert [r['method'] for r in result['rows']][0] == sample.SHARED and len(result['rows']) == 4
  assert all(r['new_tokens_per_s'] > 0 for r in result['rows'])


def test_packing_runs_each_backends_kernels_own_kernel_first():
  from ttt_jax.bench import packing  # pylint: disable=import-outside-toplevel

  assert packing.runs('gpu') == [
      ('packed', 'pallas_gpu'),
      ('unpacked', 'cudnn'),
      ('packed', 'xla'),
      ('unpacked', 'pallas_gpu'),
      ('unpacked', 'xla'),
  ]
  assert packing.runs('tpu')[:2] == [('packed', 'splash'), ('unpacked', 'splash')]
  assert packing.runs('rocm') == [('packed', 'xla'), ('unpacked', 'xla')]


def test_packing_layouts_hold_the_same_examples():
  """Unpacked rows are cut to the bucket of the longest example; packed rows hold the
  same tokens in fewer, fuller rows of seq_len."""
  from ttt_jax.bench import packing  # pylint: disable=import-outside-toplevel

  examples = packing.random_examples(2, 8, 512, seed=0)
  lengths = [len(t) for task in examples for t, _ in task]
  assert 64 <= min(lengths) and max(lengths) <= 256
  unpacked = packing.layout_arrays(examples, 512, 'unpacked')
  packed = packing.layout_arrays(examples, 512, 'packed')
  assert unpacked.tokens.shape[-1] == 256 and packed.tokens.shape[-1] == 512
  assert unpacked.segments is None and packed.segments.max() >= 2
  assert int(unpacked.lengths.sum()) == int(packed.lengths.sum()) == sum(lengths)
  assert (packed.num_examples < unpacked.num_examples).all()
