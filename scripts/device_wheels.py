"""Builds .whl/: wheels of the packages ttt_jax needs that the device machine lacks.

  python scripts/device_wheels.py                    # from the repo root, where pip works
  python scripts/device_wheels.py --kinds=PATH/KINDS.md --out=.whl

The device machine (an H200, Python 3.12, no network) has a fixed package list
(KINDS.md of the device tool, "Python packages already there"). Every
dependency of pyproject.toml not on it, and every requirement of those not on
it either, is downloaded as a Python 3.12 manylinux x86_64 wheel, at the version
installed here (what the tests ran with). The folder is git-ignored (.gitignore
and .git/info/exclude) and travels with a device call's `carry`; the command
there installs it with `pip install --no-index --no-deps --target /tmp/site`.
"""

from __future__ import annotations

import argparse
import email
import glob
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_KINDS = os.path.join(os.path.dirname(ROOT), '.library', 'device', 'KINDS.md')
MAX_MB = 30  # the device call's working tree is 64 MiB in all
# The device README's command: Python 3.12 wheels for manylinux x86_64.
PLATFORMS = (
    'manylinux_2_28_x86_64',
    'manylinux_2_27_x86_64',
    'manylinux_2_17_x86_64',
    'manylinux2014_x86_64',
    'manylinux1_x86_64',
)


def canonical(name: str) -> str:
  return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(requirement: str) -> str:
  return canonical(re.match(r'[A-Za-z0-9_.-]+', requirement.strip()).group(0))


def device_packages(kinds_md: str) -> set[str]:
  """The names after 'Packages:' in KINDS.md's "Python packages already there"."""
  with open(kinds_md) as f:
    text = f.read().split('## Python packages already there', 1)[-1]
  listed = re.search(r'Packages: (.*?)\.\s*$', text, re.M | re.S)
  if not listed:
    raise SystemExit(f'{kinds_md}: no "Packages: ..." list under "Python packages already there"')
  return {canonical(n.strip()) for n in listed.group(1).split(',')}


def project_dependencies() -> list[str]:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return [requirement_name(r) for r in tomllib.load(f)['project']['dependencies']]


def wheel_requirements(path: str) -> list[str]:
  """A wheel's unconditional Requires-Dist names (no extras)."""
  with zipfile.ZipFile(path) as z:
    metadata = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    message = email.message_from_bytes(z.read(metadata))
  return [
      requirement_name(r) for r in message.get_all('Requires-Dist') or () if 'extra ==' not in r
  ]


def download(name: str, out: str) -> str:
  """Downloads name==(the version installed here) into `out`; returns the wheel's path."""
  version = importlib.metadata.version(name)
  command = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:']
  command += ['--python-version', '3.12', '--implementation', 'cp']
  command += [arg for p in PLATFORMS for arg in ('--platform', p)]
  with tempfile.TemporaryDirectory() as scratch:
    subprocess.run(command + ['-d', scratch, f'{name}=={version}'], check=True)
    (wheel,) = glob.glob(os.path.join(scratch, '*.whl'))
    return shutil.move(wheel, os.path.join(out, os.path.basename(wheel)))


def ignore(folder: str) -> None:
  """Adds /folder/ to the repository's .git/info/exclude (shared by its worktrees)."""
  common = subprocess.run(
      ['git', '-C', ROOT, 'rev-parse', '--git-common-dir'],
      check=True,
      capture_output=True,
      text=True,
  ).stdout.strip()
  path = os.path.join(ROOT, common, 'info', 'exclude')
  line = f'/{folder}/'
  existing = open(path).read().split('\n') if os.path.exists(path) else []
  if line not in existing:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a') as f:
      f.write(f'\n{line}\n')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kinds', default=DEFAULT_KINDS, help="the device tool's KINDS.md")
  parser.add_argument('--out', default='.whl', help='the wheel folder, relative to the repo root')
  args = parser.parse_args()
  out = os.path.join(ROOT, args.out)
  os.makedirs(out, exist_ok=True)
  ignore(args.out.strip('/'))
  there = device_packages(args.kinds)
  todo, done = [n for n in project_dependencies() if n not in there], {}
  while todo:
    name = todo.pop(0)
    if name in done or name in there:
      continue
    done[name] = download(name, out)
    todo += wheel_requirements(done[name])
  for stale in set(glob.glob(os.path.join(out, '*.whl'))) - set(done.values()):
    os.remove(stale)  # one version of each: two stop the whole install there
  total = sum(os.path.getsize(w) for w in done.values())
  for name, wheel in sorted(done.items()):
    print(f'{os.path.getsize(wheel) / 2**20:7.2f} MB  {os.path.basename(wheel)}')
  print(f'{total / 2**20:7.2f} MB in {len(done)} wheels under {out}')
  if total > MAX_MB * 2**20:
    raise SystemExit(f'{out}: {total / 2**20:.1f} MB is over {MAX_MB} MB')


if __name__ == '__main__':
  main()
