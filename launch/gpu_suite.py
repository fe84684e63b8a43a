"""The one-shot GPU suite: MFU and decode speed at the Llama-3.2-1B shape, a larger built-in
model trained for a time budget, the RESULTS.md protocol with it, one summary
(ttt_jax/bench/gpu_suite.py; the device command: docs/BENCHMARKS.md "GPU suite").

  python -m launch.gpu_suite --out_dir=$OUT                 # one H100/H200, < 9 minutes
  python -m launch.gpu_suite --out_dir=/tmp/s --smoke       # all of it, tiny, on CPU

out_dir gets summary.json, summary.md and model/ (bf16 HF safetensors, shards < 16 MB):
at most 8 files. Work files (checkpoints, TTT adapters, predictions) go to --work_dir.
"""

import dataclasses

from absl import app, flags

from ttt_jax import knobs

_OUT_DIR = flags.DEFINE_string(
    'out_dir', None, 'Where the summary and the model go.', required=True
)
_WORK_DIR = flags.DEFINE_string('work_dir', '/tmp/gpu_suite_work', 'Scratch (checkpoints, runs).')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes, on CPU (the test of the suite).')
_BUDGET_S = flags.DEFINE_float('budget_s', None, 'Seconds for the whole suite (default: sizes).')
_TRAIN_S = flags.DEFINE_float('train_s', None, 'Most seconds of stage-1 training (default: sizes).')
_RESERVE_S = flags.DEFINE_float(
    'reserve_s', None, 'Seconds kept for (c) after training (default: sizes).'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  from ttt_jax.bench import gpu_suite  # pylint: disable=import-outside-toplevel

  sizes = gpu_suite.SMOKE if _SMOKE.value else gpu_suite.FULL
  changes = {'budget_s': _BUDGET_S.value, 'train_s': _TRAIN_S.value, 'reserve_s': _RESERVE_S.value}
  sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})
  summary, _ = gpu_suite.run(_OUT_DIR.value, _WORK_DIR.value, sizes)
  with open(f'{_OUT_DIR.value}/{gpu_suite.SUMMARY_MD}') as f:
    print('\n' + f.read())  # the end of the output: what a device call's reply shows
  print(f'files {summary["out_files"]}; problems: {summary["out_problems"] or "none"}')


if __name__ == '__main__':
  app.run(main)
