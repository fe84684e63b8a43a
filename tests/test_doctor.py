"""`python -m launch.doctor`: what it finds on this CPU, a warning for each version outside a
pin (ours, jax's, a plugin's), a plugin without its backend, an unwritable cache, and a fatal
finding (exit status 1) for a kernel that fails to run or a plan that does not fit."""

import importlib.metadata
import subprocess
import sys
from unittest import mock

import pytest

from configs import ttt as ttt_configs
from ttt_jax import doctor
from ttt_jax.model import attention_dispatch
from ttt_jax.model.config import PRESETS
from ttt_jax.train import ttt

ROOT = doctor.PYPROJECT.rsplit('/', 1)[0]


def _run(**overrides):
  c = ttt_configs.get_config('runlocal')
  c.data.seq_len, c.data.max_examples, c.run.num_slots = 128, 4, 2
  for key, value in overrides.items():
    block, field = key.split('__')
    c[block][field] = value
  return ttt.TTTRun.from_config(c)


@pytest.fixture(scope='module')
def findings(tmp_path_factory):
  return doctor.diagnose(_run(data__pack=True), cache_dir=str(tmp_path_factory.mktemp('cache')))


def test_what_it_finds_on_this_cpu(findings):
  by_topic = {}
  for f in findings:
    by_topic.setdefault(f.topic, []).append(f)
  assert [f.level for f in findings] == ['ok'] * len(findings) and doctor.usable(findings)
  assert by_topic['backend'][0].text.startswith('cpu: 1 x cpu')
  assert by_topic['versions'][0].text.startswith(f'jax {doctor.jax.__version__}, jaxlib')
  unpacked, packed = by_topic['attention']
  assert unpacked.text.startswith('unpacked rows: blockwise (CPU') and unpacked.text.endswith('ran')
  assert packed.text.startswith('packed rows: blockwise')
  assert 'is writable' in by_topic['cache'][0].text
  (plan,) = by_topic['memory']
  assert 'T=2 slots vmapped x 2 rows x 128 tokens, packed' in plan.text and 'fits' in plan.text
  report = doctor.report(findings)
  assert report.endswith('usable\n') and report.count('\n') == len(findings) + 1


def _fake_metadata(versions: dict, requires: dict):
  """importlib.metadata with some distributions installed (or not: None) at given versions."""
  real_version, real_requires = importlib.metadata.version, importlib.metadata.requires

  def version(name):
    if name in versions:
      if versions[name] is None:
        raise importlib.metadata.PackageNotFoundError(name)
      return versions[name]
    return real_version(name)

  return mock.patch.multiple(
      doctor.importlib.metadata,
      version=version,
      requires=lambda name: requires[name] if name in requires else real_requires(name),
  )


def test_each_version_outside_a_pin_is_one_warning():
  fake = _fake_metadata(
      # the device image's jax, a plugin for another jaxlib, a missing dependency
      {'jax': '0.11.2', 'jax-cuda13-plugin': '0.10.1', 'jax-cuda13-pjrt': '0.10.2', 'einops': None},
      {
          'jax-cuda13-plugin': ['jax-cuda13-pjrt==0.10.1'],
          'jax-cuda13-pjrt': [],
      },
  )
  with fake:
    findings = doctor.version_findings()
  lines = [f.line() for f in findings]
  assert lines[0].startswith('versions   jax') and 'jax-cuda13-plugin 0.10.1' in lines[0]
  warnings = [f.text for f in findings if f.level == 'warning']
  assert "jax 0.11.2 is outside ttt_jax's pin jax<0.11,>=0.10.2" in warnings
  assert 'einops is not installed (ttt_jax needs einops<0.9,>=0.8)' in warnings
  # jax 0.10.2's extra pins its own plugin (the jax imported here is 0.10.2)
  assert (
      "jax-cuda13-plugin 0.10.1 is outside jax[cuda13]'s pin jax-cuda13-plugin<=0.10.2,>=0.10.2"
      in warnings
  )
  assert (
      "jax-cuda13-pjrt 0.10.2 is outside jax-cuda13-plugin's pin jax-cuda13-pjrt==0.10.1"
      in warnings
  )
  assert any('jax-cuda13-plugin is installed but JAX runs on cpu' in w for w in warnings)
  assert len(warnings) == 5 and all(f.level != 'fatal' for f in findings)


def test_an_unwritable_cache_is_a_warning(tmp_path):
  (tmp_path / 'file').write_text('')
  finding = doctor.cache_finding(str(tmp_path / 'file' / 'cache'))
  assert finding.level == 'warning' and 'is not writable' in finding.text
  assert doctor.cache_finding('').text.startswith('off')


def test_a_kernel_that_fails_to_run_is_fatal():
  config = doctor.model_config(_run().model)
  choose = lambda *_: attention_dispatch.Choice('cudnn', 'pretend')  # not on this CPU
  with mock.patch.object(attention_dispatch, 'choose', choose):
    findings = doctor.attention_findings(config)
  assert [f.level for f in findings] == ['fatal', 'fatal'] and not doctor.usable(findings)
  assert 'cudnn (pretend) FAILED to run: RuntimeError: cuDNN is not detected' in findings[0].text


@pytest.mark.parametrize('peak,level', [(50, 'ok'), (95, 'warning'), (101, 'fatal')])
def test_the_plan_against_device_memory(peak, level):
  run = _run()
  plan = doctor.memory.MemoryPlan(argument=peak, output=0, alias=0, temp=0, code=0)
  with (
      mock.patch.object(doctor.memory, 'plan_ttt_step', return_value=plan),
      mock.patch.object(doctor, 'device_memory_bytes', return_value=100),
  ):
    finding = doctor.memory_finding(doctor.model_config(run.model), run)
  assert finding.level == level
  assert finding.text.endswith(
      {'ok': 'fits', 'warning': 'leave headroom', 'fatal': 'data.seq_len'}[level]
  )


def test_model_shape_from_a_preset_or_the_checkpoint():
  spec = _run().model
  assert doctor.model_config(spec).num_layers == 4  # the built-in model's config.json
  big = doctor.model_config(spec, 'llama3.2-1b')
  assert (big.head_dim, big.vocab_size, big.compute_dtype) == (64, 16, spec.compute_dtype)


def test_a_bad_model_is_fatal():
  findings = doctor.diagnose(_run(), preset='nope', plan=False, probe=False)
  known = sorted(PRESETS)
  assert (
      findings[-1].line() == f"FATAL model: ValueError: unknown model preset 'nope'; known: {known}"
  )
  assert not doctor.usable(findings)


def test_launch_prints_the_report_and_exits_0_when_usable():
  command = [sys.executable, '-m', 'launch.doctor', '--config=configs/ttt.py:runlocal']
  command += ['--plan=false', '--probe=false', '--compilation_cache_dir=']
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.startswith('backend    cpu') and done.stdout.endswith('\nusable\n')
