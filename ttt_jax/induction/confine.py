"""The sandbox's OS-level limits, applied by the forked process that runs one program.

In order: stdio to /dev/null and every inherited descriptor closed but the
reply pipe; root dropped to nobody (as root, process limits would not bind);
death with the worker; resource limits: address space, CPU seconds, no new
process (RLIMIT_NPROC 0), no file growth (RLIMIT_FSIZE 0), no core file, and,
last, no new file descriptor at all (RLIMIT_NOFILE 0: no open, socket or pipe
can succeed); then, where the kernel has it, Landlock (Linux >= 5.13): no file
system access by path (read, write, create, remove, execute), and from ABI 4
no TCP, from ABI 6 no signal to any process outside the program's own.

Every step is a kernel mechanism reached from Python (`resource`, `os`, and
`prctl`/Landlock through ctypes); none needs privileges or installed tools.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

REPLY_FD = 3  # the program's process writes its replies here
NOBODY = 65534

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every Linux architecture
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
# Landlock's handled file-system rights per ABI version (bit count), net rights from 4,
# scopes (abstract unix sockets, signals) from 6.
_FS_BITS = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}
_NET_TCP_BIND_CONNECT = 0b11
_SCOPE_UNIX_AND_SIGNAL = 0b11

_libc = ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
  """The kernel's Landlock ABI version; 0 where there is none."""
  try:
    version = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
  except AttributeError:  # no syscall() in this libc
    return 0
  return max(int(version), 0)


def describe(abi: int) -> list[str]:
  """What `confine` applies here, in words (for the run's report)."""
  layers = ['rlimits (AS, CPU, NPROC=0, FSIZE=0, NOFILE=0, CORE=0)']
  if os.geteuid() == 0:
    layers.append(f'root dropped to uid {NOBODY}')
  if abi:
    scope = 'files' + (', TCP' if abi >= 4 else '') + (', signals' if abi >= 6 else '')
    layers.append(f'landlock ABI {abi} ({scope})')
  return layers


def _landlock(abi: int) -> None:
  """Denies every file-system right (and TCP, and signals out) that this ABI knows."""
  fs = (1 << _FS_BITS[min(abi, 5)]) - 1
  fields = [fs]
  if abi >= 4:
    fields.append(_NET_TCP_BIND_CONNECT)
  if abi >= 6:
    fields.append(_SCOPE_UNIX_AND_SIGNAL)
  attr = (ctypes.c_uint64 * len(fields))(*fields)
  ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
  if ruleset < 0:
    raise OSError(ctypes.get_errno(), 'landlock_create_ruleset')
  try:
    if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
      raise OSError(ctypes.get_errno(), 'landlock_restrict_self')
  finally:
    os.close(ruleset)


def _isolate_descriptors(reply_fd: int) -> None:
  null = os.open(os.devnull, os.O_RDWR)
  for fd in (0, 1, 2):
    os.dup2(null, fd)
  if reply_fd != REPLY_FD:
    os.dup2(reply_fd, REPLY_FD)
  os.closerange(REPLY_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def die_with_parent() -> None:
  """The calling process gets SIGKILL when its parent ends (Linux; elsewhere a no-op)."""
  _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _drop_root() -> None:
  if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _address_space() -> int:
  """This process's virtual size in bytes (what the program starts from)."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')


def confine(reply_fd: int, *, memory_mb: int, cpu_seconds: int, worker_pid: int, abi: int) -> None:
  """Locks down the calling (freshly forked) process; raises if a step fails."""
  address_space = _address_space() + memory_mb * 2**20
  _isolate_descriptors(reply_fd)
  _drop_root()
  # After the uid change, which would clear it; a worker already gone is caught next.
  if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != worker_pid:
    os._exit(1)
  for limit, value in (
      (resource.RLIMIT_CORE, (0, 0)),
      (resource.RLIMIT_AS, (address_space, address_space)),
      (resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1)),
      (resource.RLIMIT_NPROC, (0, 0)),
      (resource.RLIMIT_FSIZE, (0, 0)),
  ):
    resource.setrlimit(limit, value)
  if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), 'prctl(PR_SET_NO_NEW_PRIVS)')
  if abi:
    _landlock(abi)
  resource.setrlimit(resource.RLIMIT_NOFILE, (0, 0))
