"""A TTT run (tests/train/test_ttt_kill.py) that stops in the middle of the orbax save of
one step and waits there to be killed: python ttt_kill_worker.py TASK_DIR WORKDIR MARKER STEP.

Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it into place when
everything is written (`AtomicRenameTemporaryPath.finalize`); at STEP the worker writes
MARKER just before that rename and sleeps, so a kill -9 then leaves the step half saved.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This checkout's ttt_jax (not the installed one a script run from elsewhere would import),
# and ttt_testlib beside this file.
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), HERE]

# pylint: disable=wrong-import-position
import ttt_testlib as tl
from orbax.checkpoint._src.path import atomicity

from ttt_jax.train import ttt


def kill_config(task_dir: str):
  """Two tasks, one slot, 3 steps each, a checkpoint every step: job 1 trains at steps
  4 to 6."""
  config = tl.load_config('runlocal')
  config.data.selector = f'dir:{task_dir}'
  config.data.seq_len, config.data.max_examples, config.data.augmentations_per_task = 128, 4, 2
  config.ttt.epochs, config.ttt.max_steps = 2, 3
  config.run.num_slots, config.run.checkpoint_every = 1, 1
  return config


def main(task_dir: str, workdir: str, marker: str, step: str) -> None:
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def stalled_finalize(self):
    if self.get_final().name == step:
      with open(marker, 'w') as f:
        f.write(str(os.getpid()))
      time.sleep(600)  # the test kills the process here
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = stalled_finalize
  ttt.run_ttt(kill_config(task_dir), workdir)


if __name__ == '__main__':
  main(*sys.argv[1:])
