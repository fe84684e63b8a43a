"""Tuning knobs shared by the launch scripts (absl flags), documented in
docs/PERFORMANCE.md:

  --remat=none|full|dots   rematerialisation policy of each layer (overrides config.model.remat)
  --compute_dtype=...      matmul dtype (overrides config.model.compute_dtype)
  --xla_flags='...'        appended to XLA_FLAGS before JAX starts its backend
  --hlo_dump_dir=DIR       dump the compiled HLO (--xla_dump_to=DIR)
  --profile_dir=DIR        jax.profiler trace of --profile_steps steps (TensorBoard / Perfetto)
  --compilation_cache_dir  JAX's persistent compilation cache ('' = off)

A launch script imports this module (defining the flags), calls
`apply_xla_flags()` and `apply_compilation_cache()` first thing in main() and `override_model(config.model)`
before building the model, and wraps its step function with `StepProfiler`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
from collections.abc import Callable

import jax
from absl import flags, logging

from ttt_jax.model.config import REMAT_MODES

DTYPES = ('float32', 'bfloat16', 'float16')

REMAT = flags.DEFINE_enum(
    'remat', None, REMAT_MODES, 'Per-layer rematerialisation; overrides config.model.remat.'
)
COMPUTE_DTYPE = flags.DEFINE_enum(
    'compute_dtype', None, DTYPES, 'Matmul dtype; overrides config.model.compute_dtype.'
)
XLA_FLAGS = flags.DEFINE_string('xla_flags', '', 'Extra XLA flags, appended to $XLA_FLAGS.')
HLO_DUMP_DIR = flags.DEFINE_string('hlo_dump_dir', None, 'Dump compiled HLO here (--xla_dump_to).')
PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', None, 'Write a jax.profiler trace of --profile_steps steps here.'
)
COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir',
    '~/.cache/ttt_jax/jax',
    "JAX's persistent compilation cache ('' = off): a rerun loads what it compiled before.",
)
PROFILE_STEPS = flags.DEFINE_integer(
    'profile_steps', 5, 'Steps traced with --profile_dir (after 1 compile step).'
)


def xla_flags_value(existing: str, extra: str = '', hlo_dump_dir: str | None = None) -> str:
  """XLA_FLAGS with `extra` and the dump flag appended (later flags win in XLA)."""
  added = shlex.split(extra or '')
  bad = [f for f in added if not f.startswith('--xla_')]
  if bad:
    raise ValueError(f'--xla_flags: {bad} do not look like XLA flags (each starts with --xla_)')
  if hlo_dump_dir:
    added.append(f'--xla_dump_to={hlo_dump_dir}')
  return ' '.join(shlex.split(existing or '') + added)


def apply_xla_flags() -> None:
  """Appends --xla_flags / --hlo_dump_dir to $XLA_FLAGS; XLA reads it once, when JAX
  starts its backend, so this must run before the first device use."""
  if not XLA_FLAGS.value and not HLO_DUMP_DIR.value:
    return
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel

  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        '--xla_flags / --hlo_dump_dir must be applied before JAX starts its '
        'backend; call knobs.apply_xla_flags() first in main()'
    )
  os.environ['XLA_FLAGS'] = xla_flags_value(
      os.environ.get('XLA_FLAGS', ''), XLA_FLAGS.value, HLO_DUMP_DIR.value
  )
  logging.info('XLA_FLAGS=%s', os.environ['XLA_FLAGS'])


def apply_compilation_cache() -> None:
  """Points JAX's persistent compilation cache at --compilation_cache_dir. On the 2-core
  CPU a TTT step compiles in seconds and runs in a fraction of one: a rerun of the same
  shapes (the demo, a sweep's next point) then loads instead of compiling."""
  if not COMPILATION_CACHE_DIR.value:
    return
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(COMPILATION_CACHE_DIR.value))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def override_model(model_cfg) -> None:
  """Writes --remat / --compute_dtype into a config's `model` block (a ConfigDict)."""
  if REMAT.value is not None:
    model_cfg.remat = REMAT.value
  if COMPUTE_DTYPE.value is not None:
    model_cfg.compute_dtype = COMPUTE_DTYPE.value


class StepProfiler:
  """Wraps a step function: traces calls 2..steps+1 (the first one compiles) into
  `profile_dir`, each step annotated for the trace viewer."""

  def __init__(self, profile_dir: str | None, steps: int = 5):
    if profile_dir and steps <= 0:
      raise ValueError(f'--profile_steps must be positive, got {steps}')
    self.profile_dir, self.steps, self.calls, self.active = profile_dir, steps, 0, False

  def wrap(self, step_fn: Callable) -> Callable:
    if not self.profile_dir:
      return step_fn

    @functools.wraps(step_fn)
    def profiled(*args, **kwargs):
      self.calls += 1
      if self.calls == 2:
        jax.profiler.start_trace(self.profile_dir)
        self.active = True
      if not self.active:
        return step_fn(*args, **kwargs)
      with jax.profiler.StepTraceAnnotation('train', step_num=self.calls):
        out = step_fn(*args, **kwargs)
      if self.calls == self.steps + 1:
        self.stop(jax.block_until_ready(out))
      return out

    return profiled

  def stop(self, _=None) -> None:
    """Ends the trace (also for runs shorter than the traced steps)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.info('profile of %d steps written to %s', self.calls - 1, self.profile_dir)


def step_profiler() -> StepProfiler:
  return StepProfiler(PROFILE_DIR.value, PROFILE_STEPS.value)


@contextlib.contextmanager
def profiled_step(module, name: str = 'train_step'):
  """Runs the block with `module.<name>` traced per --profile_dir/--profile_steps.

  The trainers look their step up in their module at call time, so wrapping
  the module attribute reaches it; the original is put back afterwards.
  """
  profiler, original = step_profiler(), getattr(module, name)
  setattr(module, name, profiler.wrap(original))
  try:
    yield
  finally:
    setattr(module, name, original)
    profiler.stop()
