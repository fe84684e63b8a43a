"""Judging replies in the parent, program files, and launch.verify_programs end to end
(hand-written programs in the style of BARC's seeds: function `main`, grid[x, y])."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ttt_jax.checkpoint import read_log
from ttt_jax.data.arc import Pair, Task, save_task_dir
from ttt_jax.errors import UserError
from ttt_jax.induction import program_dir, verify
from ttt_jax.induction.records import ProgramRecord


def _value(cells, shape, dtype='<i8', kind='ndarray'):
  return {'value': {'type': kind, 'dtype': dtype, 'shape': shape, 'cells': cells}}


@pytest.mark.parametrize(
    'reply, grid, why',
    [
        (_value([1, 2, 3, 4], [2, 2]), [[1, 2], [3, 4]], None),
        (_value([1.0, 0.0], [1, 2], '<f8'), [[1, 0]], None),  # BARC's array_equal accepts
        (_value([True, False], [2, 1], '|b1'), [[1], [0]], None),
        ({'error': 'ZeroDivisionError: x (line 3)'}, None, 'ZeroDivisionError'),
        ({'value': {'type': 'list'}}, None, 'the output is a list, not a numpy array'),
        ({'value': {'type': 'ndarray', 'dtype': '<i8', 'shape': [2, 2, 2]}}, None, '3 dimensions'),
        ({'value': {'type': 'ndarray', 'dtype': '<i8', 'shape': [31, 2]}}, None, 'is 31x2'),
        ({'value': {'type': 'ndarray', 'dtype': '|O', 'shape': [1, 1]}}, None, 'dtype |O'),
        (_value([1, 10], [1, 2]), None, 'the value 10, outside 0-9'),
        (_value([0.5], [1, 1], '<f8'), None, 'non-integer value 0.5'),
        (_value([float('inf')], [1, 1], '<f8'), None, 'non-integer value inf'),
        (_value([1, 2, 3], [2, 2]), None, 'does not match its shape'),
    ],
)
def test_output_grid(reply, grid, why):
  got, reason = verify.output_grid(reply)
  assert got == grid
  assert (reason is None) if why is None else (why in reason)


TASK = Task(
    'flip',
    train=(
        Pair(np.array([[1, 2]]), np.array([[2, 1]])),
        Pair(np.array([[3], [4]]), np.array([[3], [4]])),
    ),
    test=(Pair(np.array([[5, 6]]), np.array([[6, 5]])), Pair(np.array([[7]]), None)),
)


def test_judge_verdicts_errors_and_unknown_test_outputs():
  replies = [_value([2, 1], [1, 2]), {'error': 'boom'}, _value([6, 5], [1, 2]), _value([7], [1, 1])]
  record = verify.judge(TASK, 'p.py', replies)
  assert record.train_verdicts == (True, False) and not record.correct
  assert record.test_outputs == ([[6, 5]], [[7]])
  assert record.test_verdicts is None  # the second test output is unknown
  assert record.error == 'train 1: boom'


def test_judge_transposes_back():
  # The program saw transposed inputs; its outputs are transposed back before judging.
  assert verify.task_inputs(TASK, transpose=True)[0] == [[1], [2]]
  replies = [
      _value([2, 1], [2, 1]),
      _value([3, 4], [1, 2]),
      _value([6, 5], [2, 1]),
      _value([7], [1, 1]),
  ]
  record = verify.judge(TASK, 'p.py', replies, transpose=True)
  assert record.train_verdicts == (True, True) and record.test_outputs[0] == [[6, 5]]


def test_program_key_and_task_of():
  assert verify.program_key('t', 'main', 'x') == verify.program_key('t', 'main', 'x')
  assert verify.program_key('t', 'main', 'x') != verify.program_key('t', 'transform', 'x')
  ids = ['007bbfb7', 'gen-color_map-4', 'gen-color_map-4-100001']
  assert program_dir.task_of('007bbfb7.py', ids) == '007bbfb7'
  assert program_dir.task_of('007bbfb7_12.py', ids) == '007bbfb7'
  assert program_dir.task_of('gen-color_map-4-100001_a.py', ids) == 'gen-color_map-4-100001'
  assert program_dir.task_of('gen-color_map-4_b.py', ids) == 'gen-color_map-4'
  assert program_dir.task_of('007bbfb7x.py', ids) is None
  assert program_dir.task_of('common.py', ids) is None


def test_unknown_task_is_a_user_error():
  with pytest.raises(UserError, match='program p.py: task .nope. is not in the selected tasks'):
    list(verify.verify_programs({}, [('p.py', 'nope', 'def transform(g): return g')], workers=1))


# Seed-style programs: function `main`, grid[x, y] with x the column (run with --transpose).
MIRROR_SEED = """from common import *
import numpy as np

def main(input_grid):
    # x is the column: flipping along axis 0 mirrors left-right
    return input_grid[::-1, :]
"""
IDENTITY_SEED = 'def main(input_grid):\n    return input_grid\n'


def test_launch_verify_programs_writes_records_and_resumes(tmp_path):
  tasks = [
      Task(
          'mirror',
          (Pair(np.array([[1, 2, 3]]), np.array([[3, 2, 1]])),),
          (Pair(np.array([[4, 5]]), np.array([[5, 4]])),),
      ),
      Task(
          'same',
          (Pair(np.array([[1]]), np.array([[1]])),),
          (Pair(np.array([[2]]), np.array([[2]])),),
      ),
  ]
  save_task_dir(tasks, str(tmp_path / 'tasks'))
  programs = tmp_path / 'programs'
  programs.mkdir()
  (programs / 'mirror.py').write_text(MIRROR_SEED)
  (programs / 'mirror_identity.py').write_text(IDENTITY_SEED)
  (programs / 'same.py').write_text(IDENTITY_SEED)
  (programs / 'same_broken.py').write_text('def main(input_grid):\n    return input_grid +\n')
  (programs / 'common.py').write_text('')  # named for no task: skipped
  out = tmp_path / 'records.jsonl'
  args = [
      sys.executable,
      '-m',
      'launch.verify_programs',
      f'--programs={programs}',
      f"--selector=dir:{tmp_path / 'tasks'}",
      '--function_name=main',
      '--transpose',
      f'--out={out}',
      '--workers=1',
  ]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run(args, capture_output=True, text=True, cwd=repo, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'programs: 4, correct on demonstrations: 2, also on tests: 2' in proc.stdout
  assert 'common.py: skipped' in proc.stderr
  records = {
      r['program']: ProgramRecord.from_json(r)
      for r in map(json.loads, out.read_text().splitlines())
  }
  assert set(records) == {'mirror.py', 'mirror_identity.py', 'same.py', 'same_broken.py'}
  assert records['mirror.py'].correct and records['mirror.py'].test_outputs == ([[5, 4]],)
  assert records['mirror_identity.py'].train_verdicts == (False,)
  assert 'SyntaxError' in records['same_broken.py'].error

  # Resume: a torn last line is redone, finished programs are not run again.
  lines = out.read_text().splitlines()
  out.write_text('\n'.join(lines[:-1]) + '\n' + lines[-1][:10])
  summary = program_dir.verify_dir(
      str(programs),
      {t.id: t for t in tasks},
      str(out),
      function_name='main',
      workers=1,
      transpose=True,
  )
  assert summary.programs == 4 and summary.tasks_solved == 2
  assert sorted(r['program'] for r in read_log(str(out))) == sorted(records)
