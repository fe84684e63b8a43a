"""The accelerator extras of pyproject.toml: each is jax's own extra at our jax pin, names one
this jax has, and (slow, needs the package index) `pip install --dry-run '.[EXTRA]'`
resolves to our jax with the plugin built for it."""

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# extra -> the distribution jax's extra of that name installs beside jaxlib
PLUGINS = {'cuda12': 'jax-cuda12-plugin', 'cuda13': 'jax-cuda13-plugin', 'tpu': 'libtpu'}


def _project() -> dict:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def _jax_pin() -> Requirement:
  (jax,) = [r for r in map(Requirement, _project()['dependencies']) if r.name == 'jax']
  return jax


@pytest.mark.parametrize('extra', sorted(PLUGINS))
def test_each_accelerator_extra_is_jaxs_extra_at_our_pin(extra):
  (requirement,) = map(Requirement, _project()['optional-dependencies'][extra])
  assert requirement.name == 'jax' and requirement.extras == {extra}
  assert requirement.specifier == _jax_pin().specifier
  # The installed jax defines that extra, and it brings the plugin.
  brought = [
      Requirement(r).name
      for r in importlib.metadata.requires('jax')
      if Requirement(r).marker and Requirement(r).marker.evaluate({'extra': extra})
  ]
  assert PLUGINS[extra] in brought, brought


def _index_reachable() -> bool:
  try:
    socket.create_connection(('pypi.org', 443), timeout=5).close()
    return True
  except OSError:
    return False


@pytest.mark.slow
@pytest.mark.parametrize('extra', sorted(PLUGINS))
def test_pip_resolves_the_extra(extra, tmp_path):
  """What a fresh `pip install '.[EXTRA]'` would install (~20 s each: the project's
  metadata is built from a copy of pyproject.toml, and every requirement resolved)."""
  if not _index_reachable():
    pytest.skip('pypi.org is not reachable from here')
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), tmp_path)
  report = tmp_path / 'report.json'
  command = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed']
  command += ['--quiet', '--timeout', '60', '--report', str(report), f'{tmp_path}[{extra}]']
  subprocess.run(command, check=True, capture_output=True, timeout=600)
  resolved = {
      i['metadata']['name'].lower(): i['metadata']['version']
      for i in json.loads(report.read_text())['install']
  }
  assert _jax_pin().specifier.contains(resolved['jax'])
  assert resolved['jaxlib'] == resolved['jax']  # jax's extras pin jaxlib to jax itself
  plugin = resolved[PLUGINS[extra]]
  if extra != 'tpu':  # a CUDA plugin is released with its jaxlib
    assert plugin == resolved['jax'], resolved
