"""Hand-written programs fed as samples go through the sandbox, the vote and the ensemble
with TTT predictions: the sampling half's file is what the execution half reads."""

from ttt_jax.data import arc
from ttt_jax.induction import ensemble, sample, verify

# 66e6c45b: the 2x2 block in the middle of a 4x4 grid moves to the corners.
CORNERS = """from common import *
import numpy as np

def transform(input_grid):
    output_grid = np.zeros_like(input_grid)
    output_grid[0, 0], output_grid[0, -1] = input_grid[1, 1], input_grid[1, 2]
    output_grid[-1, 0], output_grid[-1, -1] = input_grid[2, 1], input_grid[2, 2]
    return output_grid"""
IDENTITY = 'def transform(input_grid):\n    return input_grid'
PROGRAMS = [CORNERS, IDENTITY, CORNERS, 'def transform(:', None, '']


def test_samples_run_vote_and_answer_the_task(tmp_path):
  (task,) = arc.load_selected('arc1/eval@ids=66e6c45b')
  path = str(tmp_path / sample.SAMPLES_FILE)
  log = sample._Log(path)
  for i, program in enumerate(PROGRAMS):
    log.write(sample.Sample(task.id, i, program, 10, True, -1.0))
  log.out.close()
  samples = list(sample.iter_samples(path))
  assert [s.duplicate_of for s in samples] == [None, None, 0, None, None, None]

  programs = ((s.name, s.task_id, s.program) for s in samples if s.program)
  records = list(verify.verify_programs({task.id: task}, programs, workers=1))
  by_name = {r.program: r for r in records}
  assert sorted(by_name) == [f'{task.id}_{i}' for i in range(4)]  # each sample its record
  assert by_name[f'{task.id}_0'].correct and by_name[f'{task.id}_2'].correct
  assert not by_name[f'{task.id}_1'].correct and not by_name[f'{task.id}_3'].correct

  truth = task.test[0].output.tolist()
  wrong = [[0]]
  ttt = {task.id: [{'attempt_1': wrong, 'attempt_2': wrong}]}
  result = ensemble.ensemble([task], {task.id: records}, ttt, ensemble.EnsembleConfig())
  assert result.choices[task.id].side == 'induction'
  assert result.choices[task.id].votes == ((2,),)  # both copies of the program vote
  assert result.submission[task.id] == [{'attempt_1': truth, 'attempt_2': wrong}]
  data = ensemble.report(result, ttt, {task.id: [truth]})
  assert data['totals']['ensemble']['total'] == 1.0 and data['totals']['transduction']['total'] == 0
