"""The SLURM job array a sweep writes, and its array command run here for one index."""

import os
import subprocess
import sys
import textwrap

from ttt_jax.sweep import arm as arm_lib
from ttt_jax.sweep import slurm, spec

SWEEP_FILE = """
from ttt_jax.sweep import spec

def get_sweep(arg=''):
  cheap = {'selector': 'gen:heldout@ids=gen-upscale-2x3-100002', 'predict.prompts.d8': (0,),
           'predict.prompts.orders': 0, 'predict.prompts.max_variants': 1}
  return spec.Sweep(
      config='configs/demo.py',
      arms=(spec.Arm('baseline'), spec.Arm('cheap', cheap, stages=('predict_base',)),
            spec.Arm('lr=0.01', {'ttt.ttt.lr': 0.01}%s)),
      resources=spec.Resources(gpus_per_node=1, time='01:00:00', partition='gpu'),
  )
"""


def _sweep_file(tmp_path, extra=''):
  path = tmp_path / 'three.py'
  path.write_text(textwrap.dedent(SWEEP_FILE % extra))
  return str(path)


def test_three_arms_make_one_array(tmp_path):
  sweep_file, workdir = _sweep_file(tmp_path), str(tmp_path / 'work')
  sweep = spec.load_sweep(sweep_file)
  [path] = slurm.write_scripts(sweep, sweep_file, workdir, sweep.arms, max_parallel=2)
  assert path == os.path.join(workdir, 'sweep.sbatch')
  text = open(path).read()
  for line in (
      '#SBATCH --array=0-2%2',
      '#SBATCH --nodes=1',
      '#SBATCH --gpus-per-node=1',
      '#SBATCH --time=01:00:00',
      '#SBATCH --partition=gpu',
      'ARMS=(0 1 2)',
      f'cd {os.getcwd()}',
  ):
    assert line in text.splitlines(), line
  command = text.splitlines()[-1]
  assert command == (
      f'"${{PYTHON:-python}}" -m launch.sweep --sweep={sweep_file} --workdir={workdir} '
      '--arm_index="${ARMS[$SLURM_ARRAY_TASK_ID]}"'
  )


def test_arms_with_other_resources_get_their_own_array_with_srun(tmp_path):
  sweep_file = _sweep_file(tmp_path, ', resources=spec.Resources(nodes=2, gpus_per_node=8)')
  sweep = spec.load_sweep(sweep_file)
  paths = slurm.write_scripts(sweep, sweep_file, str(tmp_path / 'w'), sweep.arms)
  first, second = (open(p).read().splitlines() for p in paths)
  assert [os.path.basename(p) for p in paths] == ['sweep_0.sbatch', 'sweep_1.sbatch']
  assert 'ARMS=(0 1)' in first and '#SBATCH --array=0-1' in first
  assert 'ARMS=(2)' in second and '#SBATCH --nodes=2' in second
  assert second[-1].startswith('srun "${PYTHON:-python}" -m launch.sweep')
  assert not first[-1].startswith('srun')


def test_array_index_one_runs_its_arm_locally(tmp_path):
  sweep_file, workdir = _sweep_file(tmp_path), str(tmp_path / 'work')
  sweep = spec.load_sweep(sweep_file)
  [path] = slurm.write_scripts(sweep, sweep_file, workdir, sweep.arms, ['--compilation_cache_dir='])
  env = dict(os.environ, SLURM_ARRAY_TASK_ID='1', PYTHON=sys.executable, JAX_PLATFORMS='cpu')
  run = subprocess.run(['bash', path], env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  cheap = sweep.arm('cheap')
  assert arm_lib.result_of(workdir, cheap)['stages'] == ['predict_base']
  assert os.path.exists(os.path.join(workdir, 'cheap', 'predict_base', 'submission.json'))
  assert not os.path.exists(os.path.join(workdir, 'baseline'))


def test_a_second_process_on_the_same_arm_is_refused(tmp_path):
  sweep_file, workdir = _sweep_file(tmp_path), str(tmp_path / 'work')
  holder = subprocess.Popen(
      [sys.executable, '-c', HOLD_LOCK, os.path.join(workdir, 'cheap')],
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    worker = subprocess.run(
        [sys.executable, '-m', 'launch.sweep', f'--sweep={sweep_file}', f'--workdir={workdir}',
         '--arm_index=1'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
  finally:
    holder.kill()
    holder.wait()
  assert worker.returncode == 1
  fatal = [line for line in worker.stderr.splitlines() if line.startswith('FATAL')]
  assert len(fatal) == 1 and f'pid {holder.pid}' in fatal[0], worker.stderr[-2000:]
  assert not os.path.exists(os.path.join(workdir, 'cheap', 'predict_base'))


HOLD_LOCK = """
import sys, time
from ttt_jax.run_lock import RunLock
with RunLock(sys.argv[1]):
  print('locked', flush=True)
  time.sleep(600)
"""
