"""notebooks/walkthrough.ipynb runs from top to bottom (so it never rots) and is
committed without outputs."""

import json
import os
import sys

import nbformat
from ipykernel import kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'walkthrough.ipynb')
KERNEL = 'ttt_jax_tests'


def read_notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def this_interpreters_kernel(kernels_dir) -> KernelManager:
  """A kernel of sys.executable (this venv), whatever other kernelspecs the machine has."""
  kernelspec.write_kernel_spec(os.path.join(kernels_dir, KERNEL))
  specs = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
  assert specs.get_kernel_spec(KERNEL).argv[0] == sys.executable
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def outputs_text(cell) -> str:
  return ''.join(
      out.get('text', '') + out.get('data', {}).get('text/plain', '') for out in cell.outputs
  )


def test_notebook_is_committed_without_outputs():
  nb = read_notebook()
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  tagged = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1 and 'TASK_IDS =' in tagged[0].source


def test_walkthrough_runs_end_to_end(tmp_path):
  nb = read_notebook()
  workdir = tmp_path / 'walkthrough'
  (parameters,) = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
  parameters.source += f'\nWORKDIR = {str(workdir)!r}  # the test writes here, not in runs/\n'

  client = NotebookClient(
      nb,
      km=this_interpreters_kernel(tmp_path / 'kernels'),
      timeout=600,
      resources={'metadata': {'path': ROOT}},
  )
  client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(out.output_type != 'error' for c in code for out in c.outputs)
  figures = [out for c in code for out in c.outputs if 'image/png' in out.get('data', {})]
  # 2 tasks + 2 augmentation grids + 1 leave-one-out task + 1 loss plot + 2 x 2 predictions.
  assert len(figures) == 10, len(figures)
  text = '\n'.join(outputs_text(c) for c in code)
  assert 'task 66e6c45b: 130 tokens' in text
  assert 'Score without TTT: ' in text and '| **total** |' in text

  metrics = [json.loads(line) for line in open(workdir / 'ttt' / 'ttt_metrics.jsonl')]
  assert sorted(m['task_id'] for m in metrics) == ['00576224', '66e6c45b']
  assert all(m['status'] == 'done' and len(m['losses']) == m['steps'] > 0 for m in metrics)
  for run in ('predict_base', 'predict_ttt'):
    submission = json.load(open(workdir / run / 'submission.json'))
    assert set(submission) == {'00576224', '66e6c45b'}
  assert not os.path.exists(os.path.join(ROOT, 'notebooks', 'runs'))
