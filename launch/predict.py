r"""Augmented inference: tasks + TTT adapters -> candidates -> vote -> submission + report.

  python -m launch.predict --config=configs/predict.py:runlocal --output_dir=/tmp/predict
  python -m launch.predict --config=configs/predict.py --output_dir=/runs/ttt1/predict \
      --config.model.checkpoint_dir=/ckpt/base --config.adapters_dir=/runs/ttt1/adapters \
      --config.decoding=dfs --config.score_augmentations=8 \
      --config.vote.rank_mode=votes_then_scores

Writes output_dir/attempts.jsonl (one line per finished task, with its
candidates; a re-run skips them), submission.json, details.json and, when
test outputs are known, report/report.{json,md}. A task whose adapter is
missing a file, truncated or shaped for another model is `failed` (its line
and the report name the file) and the others go on; a re-run tries it again.

Another voting or readout, without decoding again (the candidates stored by a run):
  python -m launch.predict --revote_from=/runs/ttt1/predict --output_dir=/runs/ttt1/flat \
      --config.vote.method=flat
  (methods: hierarchical, flat, marc, vanilla, single with --config.vote.transform=NAME,
  oracle; ttt_jax/infer/vote.py)
"""

from absl import app, flags
from ml_collections import config_flags

from ttt_jax import errors, knobs
from ttt_jax.eval import metrics
from ttt_jax.infer import predict

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/predict.py', 'Predict config file.', lock_config=True
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where the results go.', required=True)
_REVOTE_FROM = flags.DEFINE_string(
    'revote_from',
    None,
    "A prediction's output_dir: vote its stored candidates again with "
    "this config's vote settings instead of decoding.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  knobs.apply_xla_flags()  # before anything touches a device
  knobs.apply_compilation_cache()
  c = _CONFIG.value
  knobs.override_model(c.model)
  with errors.as_usage_errors():
    if _REVOTE_FROM.value:
      run = predict.PredictRun.from_config(c)
      score = predict.run_revote(run.selector, _REVOTE_FROM.value, _OUTPUT_DIR.value, run.predict)
    else:
      score = predict.run_from_config(c, _OUTPUT_DIR.value)
  if score is not None:
    print(metrics.summary(score))


if __name__ == '__main__':
  app.run(main)
