"""Is this machine ready for a TTT recipe? (`python -m launch.doctor`)

One line per finding, each a `Finding`:
  backend     the JAX backend, its devices and their memory
  versions    jax, jaxlib and the accelerator plugins; a warning for each installed
              package outside ttt_jax's pins (pyproject.toml) or jax's own
  attention   the kernel `model.attention` takes for an unpacked and a packed TTT row of the
              recipe's model, and why (model/attention_dispatch.py), each run once
              (a forward and backward of a small batch: a kernel that fails is fatal)
  cache       whether JAX's persistent compilation cache directory is writable
  memory      the dry-run planner's peak per device for the recipe's step (memory.py)
              against the devices' memory
The machine is usable for the recipe when nothing is fatal (warnings are mismatches worth
knowing, e.g. a jax newer than the one the tests ran with).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import tempfile
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
from packaging.requirements import Requirement

from ttt_jax import memory
from ttt_jax.formats.compact import COMPACT
from ttt_jax.model import attention_dispatch, builtin, hf
from ttt_jax.model.config import ModelConfig
from ttt_jax.train import hyper

PYPROJECT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pyproject.toml'
)
# pyproject.toml's accelerator extras; each is jax's extra of that name.
ACCELERATOR_EXTRAS = {'cuda12': 'gpu', 'cuda13': 'gpu', 'tpu': 'tpu'}
HEADROOM = 0.9  # a plan fits when its peak is at most this share of a device's memory
GB = 1e9


@dataclasses.dataclass(frozen=True)
class Finding:
  topic: str
  text: str
  level: str = 'ok'  # 'ok'; 'warning': a mismatch; 'fatal': the recipe cannot run here

  def line(self) -> str:
    if self.level == 'ok':
      return f'{self.topic:<10} {self.text}'
    return f'{self.level.upper()} {self.topic}: {self.text}'


def usable(findings: list[Finding]) -> bool:
  return all(f.level != 'fatal' for f in findings)


# --- backend, devices, versions ------------------------------------------------------------


def device_memory_bytes() -> int:
  """The least memory of a local device: its allocator's limit, or on a CPU the host's
  RAM shared by its devices."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  if all(s and 'bytes_limit' in s for s in stats):
    return min(s['bytes_limit'] for s in stats)
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // jax.local_device_count()


def backend_finding() -> Finding:
  device = jax.local_devices()[0]
  return Finding(
      'backend',
      f'{jax.default_backend()}: {jax.local_device_count()} x {device.device_kind}, '
      f'{device_memory_bytes() / GB:.1f} GB each; processes: {jax.process_count()}, '
      f'devices in all: {jax.device_count()}',
  )


def installed_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def project_requirements() -> list[Requirement]:
  """ttt_jax's dependencies: from pyproject.toml in a checkout, else the installed metadata."""
  if os.path.exists(PYPROJECT):
    with open(PYPROJECT, 'rb') as f:
      return [Requirement(r) for r in tomllib.load(f)['project']['dependencies']]
  requirements = map(Requirement, importlib.metadata.requires('ttt_jax') or ())
  return [r for r in requirements if not r.marker]


def _requires(dist: str, extra: str = '') -> list[Requirement]:
  """`dist`'s unconditional requirements, or with `extra` those of that extra alone."""
  found = []
  for r in map(Requirement, importlib.metadata.requires(dist) or ()):
    if extra:
      if r.marker and 'extra' in str(r.marker) and r.marker.evaluate({'extra': extra}):
        found.append(r)
    elif r.marker is None or r.marker.evaluate({'extra': ''}):
      found.append(r)
  return found


def plugins() -> dict[str, str]:
  """The accelerator plugins installed ({name: version}): what jax's extras pin beside
  jaxlib (a plugin is built for one jax), and what those pin (the CUDA plugins' PJRT)."""
  pinned = lambda rs: [r.name for r in rs if r.specifier and r.name != 'jaxlib']
  names = [n for e in ACCELERATOR_EXTRAS for n in pinned(_requires('jax', e))]
  installed = {n: installed_version(n) for n in names if installed_version(n)}
  for name in list(installed):
    installed |= {n: installed_version(n) for n in pinned(_requires(name)) if installed_version(n)}
  return installed


def version_findings() -> list[Finding]:
  """The versions line, then a warning per installed package outside a pin: ttt_jax's
  dependencies (pyproject.toml), jax's jaxlib, jax's extras' plugins, the plugins' own."""
  found = plugins()
  text = f'jax {jax.__version__}, jaxlib {installed_version("jaxlib")}; ' + (
      ', '.join(f'{n} {v}' for n, v in found.items()) or 'no accelerator plugin'
  )
  findings = [Finding('versions', text)]
  # (whose pin, requirement, must it be installed)
  pins = [('ttt_jax', r, True) for r in project_requirements()]
  pins += [('jax', r, False) for r in _requires('jax') if r.name == 'jaxlib']
  for extra in ACCELERATOR_EXTRAS:
    pins += [(f'jax[{extra}]', r, False) for r in _requires('jax', extra) if r.name in found]
  pins += [(name, r, False) for name in found for r in _requires(name)]
  for owner, r, required in pins:
    version, pin = installed_version(r.name), f'{r.name}{r.specifier}'
    if version is None and required:
      findings.append(
          Finding('versions', f'{r.name} is not installed ({owner} needs {pin})', 'warning')
      )
    elif version is not None and not r.specifier.contains(version, prereleases=True):
      findings.append(
          Finding('versions', f"{r.name} {version} is outside {owner}'s pin {pin}", 'warning')
      )
  backend = jax.default_backend()
  for extra, wants in ACCELERATOR_EXTRAS.items():
    brought = list(dict.fromkeys(r.name for r in _requires('jax', extra) if r.name in found))
    if brought and backend != wants:
      findings.append(
          Finding(
              'backend',
              f'{", ".join(brought)} is installed but JAX runs on {backend}: no {wants.upper()} '
              "visible, or its driver does not suit the plugin (JAX's start-up log says which)",
              'warning',
          )
      )
  return findings


# --- the recipe's model, attention, cache, memory -------------------------------------------


def model_config(spec: builtin.ModelSpec, preset: str = '') -> ModelConfig:
  """The shape a run of `spec` trains (no weights read): `preset` (vocab shrunk to the
  compact format's 16 tokens when the format is compact), else the checkpoint's
  config.json, else spec.preset."""
  dtypes = dict(param_dtype=spec.param_dtype, compute_dtype=spec.compute_dtype, remat=spec.remat)
  directory = builtin.resolve(spec.checkpoint_dir)
  if preset or not directory:
    vocab = {'vocab_size': COMPACT.vocab_size} if spec.format == 'compact' else {}
    config = ModelConfig.preset(preset or spec.preset, **vocab, **dtypes)
  else:
    with open(os.path.join(directory, hf.CONFIG_FILE)) as f:
      config = ModelConfig.from_hf(json.load(f), **dtypes)
  return config.replace(attention_impl=spec.attention)


def probe_kernel(kernel: str, config: ModelConfig, segmented: bool) -> str | None:
  """None when `kernel` runs a jitted forward and backward of a small batch at the model's
  heads, head_dim and compute dtype here, else the error (one line)."""
  B, S = 2, 256
  dtype = jnp.dtype(config.compute_dtype)
  rng = np.random.default_rng(0)
  q, k, v = (
      jnp.asarray(rng.normal(size=(B, S, heads, config.head_dim)), dtype)
      for heads in (config.num_heads, config.num_kv_heads, config.num_kv_heads)
  )
  valid_BS = jnp.arange(S)[None, :] < jnp.asarray([[S], [S - 57]])
  segments_BS = (jnp.arange(S)[None, :] >= 100).astype(jnp.int32) + 1 if segmented else None
  segments_BS = None if segments_BS is None else jnp.broadcast_to(segments_BS, (B, S))

  def loss(q, k, v):
    out = attention_dispatch.attend(
        q, k, v, valid_BS, segments_BS, impl=kernel, compute_dtype=config.compute_dtype
    )
    return jnp.sum(out.astype(jnp.float32))

  try:
    jax.block_until_ready(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v))
    return None
  except Exception as e:  # pylint: disable=broad-except
    return one_line(e)


def one_line(e: BaseException) -> str:
  """The error's type and first line (jax appends paragraphs on traceback filtering)."""
  return f'{type(e).__name__}: {(str(e).strip().splitlines() or [""])[0][:300]}'.rstrip(': ')


def attention_findings(config: ModelConfig, probe: bool = True) -> list[Finding]:
  findings = []
  for segmented, rows in ((False, 'unpacked rows'), (True, 'packed rows')):
    args = (jax.default_backend(), config.compute_dtype, config.head_dim, segmented)
    try:
      choice = attention_dispatch.choose(config.attention_impl, *args)
    except ValueError as e:
      findings.append(Finding('attention', f'{rows}: {e}', 'fatal'))
      continue
    text = f'{rows}: {choice.kernel} ({choice.why})'
    error = probe_kernel(choice.kernel, config, segmented) if probe else None
    if error:
      findings.append(
          Finding('attention', f'{text} FAILED to run: {error}; try model.attention=xla', 'fatal')
      )
    else:
      findings.append(Finding('attention', text + ('; ran' if probe else '')))
  return findings


def cache_finding(cache_dir: str) -> Finding:
  """Whether JAX's persistent compilation cache can write to `cache_dir` ('' = off)."""
  if not cache_dir:
    return Finding('cache', "off (--compilation_cache_dir=''): every run compiles afresh")
  path = os.path.expanduser(cache_dir)
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
      pass
  except OSError as e:
    return Finding(
        'cache',
        f'{path} is not writable ({e.strerror}): every run compiles afresh; '
        'pass --compilation_cache_dir=DIR',
        'warning',
    )
  return Finding('cache', f'{path} is writable (reruns of the same shapes load, not compile)')


def memory_finding(config: ModelConfig, run) -> Finding:
  """The planner's peak for `run` (a ttt.TTTRun) at its longest rows against the devices
  (its slots at the largest rank of an in-step sweep)."""
  ttt_config = hyper.slot_config(run.ttt, run.run.hypers(run.ttt).values())
  shape = (
      f'T={run.run.num_slots} slots vmapped x {run.ttt.batch_size} rows x {run.data.seq_len} '
      f'tokens, {"packed" if run.data.pack else "unpacked"}, {config.num_params / 1e6:,.0f}M '
      f'params {config.param_dtype}, LoRA r{ttt_config.lora.rank}, remat {config.remat}'
      + (f', base in {run.model.quantize}' if run.model.quantize else '')
  )
  try:
    plan = memory.plan_ttt_step(
        config,
        ttt_config,
        run.run.num_slots,
        run.data.seq_len,
        run.data.max_examples,
        run.run.mesh,
        packed=run.data.pack,
        quantize=run.model.quantize,
        double_quant=run.model.double_quant,
    )
  except Exception as e:  # pylint: disable=broad-except
    return Finding('memory', f'{shape}: the planner failed: {one_line(e)}', 'fatal')
  limit = device_memory_bytes()
  text = f'{shape}: peak {plan.peak / GB:.2f} GB per device of {limit / GB:.1f} GB'
  if jax.default_backend() == 'cpu':
    text += ' (compiled for the CPU)'
  if plan.peak > limit:
    return Finding('memory', f'{text}: does NOT fit; lower run.num_slots or data.seq_len', 'fatal')
  if plan.peak > HEADROOM * limit:
    return Finding('memory', f'{text}: tight (over {HEADROOM:.0%}): leave headroom', 'warning')
  return Finding('memory', f'{text}: fits')


def diagnose(
    run, preset: str = '', cache_dir: str = '', plan: bool = True, probe: bool = True
) -> list[Finding]:
  """Every finding for `run` (a ttt.TTTRun) on this machine."""
  findings = [backend_finding(), *version_findings()]
  try:
    config = model_config(run.model, preset)
  except (OSError, ValueError) as e:
    return findings + [Finding('model', one_line(e), 'fatal')]
  findings.append(
      Finding(
          'model',
          f'{preset or run.model.checkpoint_dir or run.model.preset}: {config.num_layers} layers, '
          f'{config.num_heads} heads ({config.num_kv_heads} kv) x {config.head_dim}, '
          f'{config.compute_dtype} compute, attention={config.attention_impl}',
      )
  )
  findings += attention_findings(config, probe)
  findings.append(cache_finding(cache_dir))
  if plan:
    findings.append(memory_finding(config, run))
  return findings


def report(findings: list[Finding]) -> str:
  ok = [f.line() for f in findings if f.level == 'ok']
  problems = [f.line() for f in findings if f.level != 'ok']
  verdict = 'usable' if usable(findings) else 'NOT usable for this recipe'
  return '\n'.join(ok + problems + [verdict]) + '\n'
