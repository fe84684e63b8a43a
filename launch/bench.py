"""Benchmarks: each prints a Markdown table and writes JSON (--out). Results
and the commands that made them: docs/BENCHMARKS.md.

  python -m launch.bench --bench=ttt-step        # ours (vmap, loop) vs transformers+peft
  python -m launch.bench --bench=decode          # our KV-cache greedy vs HF generate
  python -m launch.bench --bench=sample          # sampling programs (induction), tokens/s
  python -m launch.bench --bench=end-to-end --selector='arc1/eval@slice=0:2'
  python -m launch.bench --bench=mfu --num_tasks=1,8,16   # meant for a GPU
  python -m launch.bench --bench=memory --num_devices=8 --mesh=data:8 \
      --preset=llama3.1-8b --seq_len=8192 --num_tasks=8,16   # dry run, no allocation
  python -m launch.bench --bench=execution --barc_dir=BARC --barc_python=VENV/bin/python \
      --workers=1,2   # program executions/s: our sandbox vs BARC's executor

Unset shape flags take the bench's defaults (BENCH_DEFAULTS). The tuning
flags of ttt_jax/knobs.py apply (--xla_flags, --remat, --compute_dtype, ...).
"""

import os

from absl import app, flags

from ttt_jax import knobs

BENCHES = ('ttt-step', 'decode', 'sample', 'end-to-end', 'mfu', 'memory', 'execution')
# bench -> defaults of the shape flags (the REFERENCE setup for ttt-step).
BENCH_DEFAULTS = {
    'ttt-step': dict(preset='tiny', num_tasks=[4], batch_size=4, seq_len=1024, rank=8),
    'decode': dict(preset='tiny', num_tasks=[4], batch_size=16, seq_len=800, rank=8),
    'sample': dict(preset='tiny', num_tasks=[2], batch_size=16, seq_len=1600, rank=8),
    'end-to-end': dict(preset='tiny', num_tasks=[4], batch_size=2, seq_len=2048, rank=8),
    'mfu': dict(preset='llama3.2-1b', num_tasks=[1, 8, 16], batch_size=2, seq_len=2048, rank=128),
    'memory': dict(
        preset='llama3.1-8b', num_tasks=[1, 2, 4, 8, 16], batch_size=2, seq_len=8192, rank=128
    ),
    'execution': {},
}

_BENCH = flags.DEFINE_enum('bench', None, BENCHES, 'Which benchmark (or give it positionally).')
flags.DEFINE_string('preset', None, 'Model preset.')
flags.DEFINE_list('num_tasks', None, 'Tasks T trained together (a list for mfu/memory).')
flags.DEFINE_integer('batch_size', None, 'Sequences per task per step (decode: rows).')
flags.DEFINE_integer('seq_len', None, 'Tokens per sequence (decode: prompt length).')
flags.DEFINE_integer('rank', None, 'LoRA rank.')
flags.DEFINE_integer('steps', 3, 'Timed steps (after one warm-up).')
flags.DEFINE_integer('rounds', 5, 'ttt-step/decode: interleaved rounds (each times every method).')
flags.DEFINE_string('out', None, 'Write the results JSON here.')
# ttt-step
flags.DEFINE_integer('torch_threads', 2, 'ttt-step: torch.set_num_threads for the HF peer.')
# decode
flags.DEFINE_integer('new_tokens', 200, 'decode/sample: new tokens per row.')
# end-to-end
flags.DEFINE_string('selector', 'arc1/eval@slice=0:2', 'end-to-end: ARC tasks.')
flags.DEFINE_integer('ttt_max_steps', 2, 'end-to-end: config.ttt.max_steps.')
flags.DEFINE_string('recipe', 'runlocal', "end-to-end: configs' argument ('' = paper).")
# mfu
flags.DEFINE_float('peak_flops', None, 'mfu: peak FLOP/s per device (else a table).')
flags.DEFINE_list('modes', ['vmap', 'loop'], 'mfu: vmap and/or loop.')
flags.DEFINE_integer(
    'vocab_size', 16, "mfu/memory: vocab (16 = shrunk to ARC tokens); sample: Llama-3's unless set."
)
flags.DEFINE_string('param_dtype', 'bfloat16', 'mfu/memory: base weight dtype.')
# memory
flags.DEFINE_integer(
    'num_devices', None, 'memory: fake CPU devices to plan for (set before JAX starts).'
)
flags.DEFINE_list('mesh', ['data:-1'], "memory: axis:size list, e.g. 'data:4,fsdp:2'.")
flags.DEFINE_integer('max_examples', 250, 'memory: examples per task (N).')
flags.DEFINE_float('budget_gb', 80.0, 'memory: per-device budget for the fits column.')
flags.DEFINE_enum(
    'quantize', None, ['nf4', 'int8'], 'memory: the base projections quantized (QLoRA).'
)
flags.DEFINE_list('targets', None, 'LoRA targets (ttt-step: all 7; memory/mfu: paper).')
flags.DEFINE_integer(
    'loss_capacity', None, 'memory: LM head on at most this many targets per task batch.'
)
# execution
flags.DEFINE_string('barc_dir', None, 'execution: a checkout of xu3kev/BARC (outside this repo).')
flags.DEFINE_string(
    'barc_python', None, "execution: the Python of an env with BARC's requirements."
)
flags.DEFINE_string('seeds_dir', None, "execution: the seed programs (default: BARC's seeds/).")
flags.DEFINE_list('workers', ['1', '2'], 'execution: sandbox worker counts to time.')
flags.DEFINE_integer('barc_workers', None, "execution: BARC's pool size (default: max --workers).")
_OWN_FLAGS = (
    'preset',
    'num_tasks',
    'batch_size',
    'seq_len',
    'rank',
    'steps',
    'rounds',
    'out',
    'torch_threads',
    'new_tokens',
    'selector',
    'ttt_max_steps',
    'recipe',
    'peak_flops',
    'modes',
    'vocab_size',
    'param_dtype',
    'num_devices',
    'mesh',
    'max_examples',
    'budget_gb',
    'quantize',
    'targets',
    'loss_capacity',
    'barc_dir',
    'barc_python',
    'seeds_dir',
    'workers',
    'barc_workers',
)


def _args() -> dict:
  """Every flag value this script reads, with the bench's defaults filled in."""
  defaults = BENCH_DEFAULTS[_BENCH.value]
  args = {name: flags.FLAGS[name].value for name in _OWN_FLAGS}
  for name, default in defaults.items():
    if args[name] is None:
      args[name] = default
  args['num_tasks'] = [int(t) for t in args['num_tasks'] or []]
  args['targets'] = tuple(args['targets']) if args['targets'] else None
  return args


def _mesh_axes(items) -> tuple[tuple[str, int], ...]:
  axes = dict((('data', -1), ('fsdp', 1), ('tensor', 1)))
  for item in items:
    name, _, size = item.partition(':')
    if name not in axes or not size.lstrip('-').isdigit():
      raise app.UsageError(f'--mesh item {item!r}: want data|fsdp|tensor:SIZE')
    axes[name] = int(size)
  return tuple(axes.items())


def main(argv):
  if len(argv) == 2 and argv[1] in BENCHES and _BENCH.value is None:
    flags.FLAGS.bench = argv[1]
  elif len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _BENCH.value is None:
    raise app.UsageError(f'give --bench, one of {BENCHES}')
  knobs.apply_xla_flags()
  knobs.apply_compilation_cache()
  a = _args()
  remat, compute_dtype = knobs.REMAT.value, knobs.COMPUTE_DTYPE.value
  if a['num_devices']:
    import jax  # pylint: disable=import-outside-toplevel

    jax.config.update('jax_num_cpu_devices', a['num_devices'])  # before the backend starts
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  bench, preset, out = _BENCH.value, a['preset'], a['out']

  if bench == 'ttt-step':
    from ttt_jax.bench import hf_peer  # pylint: disable=import-outside-toplevel

    hf_peer.bench_vs_hf(
        preset,
        a['num_tasks'][0],
        a['batch_size'],
        a['seq_len'],
        a['steps'],
        a['rank'],
        targets=a['targets'] or hf_peer.ALL_TARGETS,
        torch_threads=a['torch_threads'],
        rounds=a['rounds'],
        out=out,
    )
  elif bench == 'decode':
    from ttt_jax.bench import decode  # pylint: disable=import-outside-toplevel

    decode.benchmark_decode(
        preset, a['batch_size'], a['seq_len'], a['new_tokens'], a['num_tasks'][0], a['rounds'], out
    )
  elif bench == 'sample':
    from ttt_jax.bench import sample  # pylint: disable=import-outside-toplevel

    vocab = a['vocab_size'] if flags.FLAGS['vocab_size'].present else sample.LLAMA3_VOCAB
    sample.benchmark_sampling(
        preset, a['batch_size'], a['seq_len'], a['new_tokens'], a['num_tasks'][0], vocab,
        a['rounds'], out,
    )  # fmt: skip
  elif bench == 'end-to-end':
    from configs import predict as predict_configs  # pylint: disable=import-outside-toplevel
    from configs import ttt as ttt_configs  # pylint: disable=import-outside-toplevel
    from ttt_jax.bench import end_to_end  # pylint: disable=import-outside-toplevel

    overrides = {
        'ttt.max_steps': a['ttt_max_steps'],
        'data.seq_len': a['seq_len'],
        'ttt.batch_size': a['batch_size'],
        'ttt.lora.rank': a['rank'],
    }
    overrides |= {
        f'model.{k}': v
        for k, v in (('remat', remat), ('compute_dtype', compute_dtype))
        if v is not None
    }
    end_to_end.bench_end_to_end(
        ttt_configs.get_config(a['recipe']),
        predict_configs.get_config(a['recipe']),
        a['selector'],
        preset,
        ttt_overrides=overrides,
        out=out,
    )
  elif bench == 'mfu':
    from ttt_jax.bench import mfu  # pylint: disable=import-outside-toplevel

    mfu.bench_mfu(
        preset,
        tuple(a['num_tasks']),
        a['batch_size'],
        a['seq_len'],
        a['rank'],
        a['vocab_size'],
        compute_dtype or 'bfloat16',
        a['param_dtype'],
        remat or 'full',
        a['steps'],
        tuple(a['modes']),
        a['peak_flops'],
        out=out,
    )
  elif bench == 'execution':
    from ttt_jax.bench import execution  # pylint: disable=import-outside-toplevel

    seeds_dir = a['seeds_dir'] or (a['barc_dir'] and os.path.join(a['barc_dir'], 'seeds'))
    if not seeds_dir:
      raise app.UsageError('--bench=execution needs --seeds_dir or --barc_dir')
    execution.bench_execution(
        seeds_dir,
        [int(w) for w in a['workers']],
        a['rounds'],
        barc_dir=a['barc_dir'],
        barc_python=a['barc_python'],
        barc_workers=a['barc_workers'],
        out=out,
    )
  else:
    _memory(a, remat or 'full', compute_dtype or 'bfloat16')


def _memory(a: dict, remat: str, compute_dtype: str) -> None:
  from ttt_jax import memory  # pylint: disable=import-outside-toplevel
  from ttt_jax.bench import report  # pylint: disable=import-outside-toplevel
  from ttt_jax.model.config import ModelConfig  # pylint: disable=import-outside-toplevel
  from ttt_jax.model.lora import LoraConfig  # pylint: disable=import-outside-toplevel
  from ttt_jax.train.ttt_config import TTTConfig  # pylint: disable=import-outside-toplevel

  preset = a['preset']
  model_config = ModelConfig.preset(
      preset,
      param_dtype=a['param_dtype'],
      compute_dtype=compute_dtype,
      remat=remat,
      **({'vocab_size': a['vocab_size']} if a['vocab_size'] else {}),
  )
  lora = LoraConfig(rank=a['rank'], **({'targets': a['targets']} if a['targets'] else {}))
  ttt_config = TTTConfig(lora=lora, batch_size=a['batch_size'], loss_capacity=a['loss_capacity'])
  rows = memory.plan_rows(
      model_config,
      ttt_config,
      a['num_tasks'],
      a['seq_len'],
      a['max_examples'],
      _mesh_axes(a['mesh']),
      a['budget_gb'],
      a['quantize'],
  )
  report.report(
      f'TTT step memory per device (CPU-compiled estimate), {preset}, '
      f'{a["quantize"] or model_config.param_dtype} weights, '
      f'{model_config.compute_dtype} compute, remat {model_config.remat}, LoRA r{ttt_config.lora.rank} on '
      f'{",".join(ttt_config.lora.targets)}, batch {ttt_config.batch_size}, '
      f'vocab {model_config.vocab_size}, loss capacity {ttt_config.loss_capacity}',
      rows,
      out=a['out'],
  )


if __name__ == '__main__':
  app.run(main)
