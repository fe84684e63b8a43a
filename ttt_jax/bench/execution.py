"""Benchmark: program executions (program x input) per second, our sandbox vs BARC's executor.

The workload is BARC's 162 seed programs (function `main`) on every
demonstration and test input of their ARC-AGI-1 training tasks, transposed as
BARC's validate.py runs them. Ours: `verify.verify_programs` on a warm
`sandbox.Executor` of W workers, for each W in --workers (the pool's start is
not timed, the parent-side judging is). BARC's: its
`execution.multi_execute_transformation` (a pebble pool, the whole library
source executed with every execution), run by barc_executor_peer.py in BARC's
own environment, outside this repository, timed inside that process as one
call over all pairs. Interleaved rounds (interleave.py); ratios to BARC per
round. The outputs double as the library check: how many seeds solve their
task (demonstrations and tests) with our `common` and with BARC's, and which
differ.

  python -m launch.bench --bench=execution --barc_dir=/path/to/BARC \
      --barc_python=/path/to/barc-venv/bin/python --workers=1,2 --rounds=3 \
      --out=/tmp/bench_execution.json
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence

from ttt_jax.bench import interleave, report
from ttt_jax.data.arc import Task, load_tasks
from ttt_jax.induction import program_dir, sandbox, verify
from ttt_jax.induction.records import ProgramRecord

BARC = "BARC's executor"
_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'barc_executor_peer.py')


def _ours(workers: int) -> str:
  return f'ours ({workers} workers)'


def seed_workload(seeds_dir: str, selector: str = 'arc1/train'):
  """(tasks by id, programs) of the seeds in `seeds_dir` whose task is in `selector`."""
  tasks, _ = load_tasks(selector)
  by_id = {t.id: t for t in tasks}
  programs, _ = program_dir.read_programs(seeds_dir, by_id)
  return by_id, programs


def _solves(record: ProgramRecord) -> bool:
  return record.correct and bool(record.test_verdicts) and all(record.test_verdicts)


def run_ours(
    executor: sandbox.Executor, by_id, programs, function_name: str, limits: sandbox.Limits
):
  """(seconds, records by program name) of one pass over the programs."""
  start = time.perf_counter()
  records = verify.verify_programs(
      by_id, programs, function_name=function_name, limits=limits, executor=executor, transpose=True
  )
  by_name = {r.program: r for r in records}
  return time.perf_counter() - start, by_name


def _barc_reply(output) -> dict:
  """BARC's output for one execution (a grid as lists, or its failure string) as our reply."""
  if isinstance(output, str):
    return {'error': f'BARC: {output}'}
  shape = [len(output), len(output[0]) if output else 0]
  cells = [c for row in output for c in row]
  return {'value': {'type': 'ndarray', 'dtype': '?', 'shape': shape, 'cells': cells}}


def run_barc(
    barc_python: str,
    barc_dir: str,
    by_id: Mapping[str, Task],
    programs: Sequence[verify.Program],
    function_name: str,
    timeout_s: float,
    workers: int,
):
  """(seconds inside the peer, records by program name) of one pass of BARC's executor."""
  jobs = {
      'function_name': function_name,
      'timeout_s': timeout_s,
      'programs': [
          {'source': source, 'inputs': verify.task_inputs(by_id[task_id], transpose=True)}
          for _, task_id, source in programs
      ],
  }
  with tempfile.TemporaryDirectory() as tmp:
    jobs_path, out_path = os.path.join(tmp, 'jobs.json'), os.path.join(tmp, 'out.json')
    with open(jobs_path, 'w') as f:
      json.dump(jobs, f)
    command = [barc_python, _PEER, f'--barc_dir={barc_dir}', f'--jobs={jobs_path}']
    command += [f'--out={out_path}', f'--workers={workers}']
    peer = subprocess.run(command, capture_output=True, text=True, check=False)
    if peer.returncode != 0:
      raise RuntimeError(f"BARC's executor failed (exit {peer.returncode}): {peer.stderr[-2000:]}")
    with open(out_path) as f:
      result = json.load(f)
  records = {}
  for (name, task_id, _), outputs in zip(programs, result['outputs']):
    replies = [_barc_reply(o) for o in outputs]
    records[name] = verify.judge(by_id[task_id], name, replies, transpose=True)
  return result['wall_s'], records


def library_check(ours: Mapping[str, ProgramRecord], barc: Mapping[str, ProgramRecord]) -> dict:
  """Seeds solving their task (demonstrations and tests) with each library; which differ."""
  differ = sorted(n for n in ours if _solves(ours[n]) != _solves(barc[n]))
  return {
      'seeds': len(ours),
      'solved_with_our_common': sum(map(_solves, ours.values())),
      'solved_with_barc_common': sum(map(_solves, barc.values())),
      'differ': {n: {'ours': ours[n].error, 'barc': barc[n].error} for n in differ},
  }


def bench_execution(
    seeds_dir: str,
    workers: Sequence[int],
    rounds: int,
    *,
    barc_dir: str | None = None,
    barc_python: str | None = None,
    barc_workers: int | None = None,
    timeout_s: float = 2.0,
    out: str | None = None,
) -> dict:
  by_id, programs = seed_workload(seeds_dir)
  executions = sum(len(by_id[t].train) + len(by_id[t].test) for _, t, _ in programs)
  limits = sandbox.Limits(timeout_s=timeout_s)
  executors = {w: sandbox.Executor(w) for w in workers}
  last: dict[str, dict] = {}
  runs, pool_size = {}, {}
  try:
    for w, executor in executors.items():

      def ours(executor=executor, name=_ours(w)):
        seconds, last[name] = run_ours(executor, by_id, programs, 'main', limits)
        return seconds

      runs[_ours(w)], pool_size[_ours(w)] = ours, w
    peer_workers = pool_size[BARC] = barc_workers or max(workers)
    if barc_dir and barc_python:

      def barc():
        seconds, last[BARC] = run_barc(
            barc_python, barc_dir, by_id, programs, 'main', timeout_s, peer_workers
        )
        return seconds

      runs[BARC] = barc
    seconds = interleave.interleaved(runs, rounds)
    isolation = executors[workers[0]].isolation
  finally:
    for executor in executors.values():
      executor.close()
  reference = BARC if BARC in seconds else next(iter(seconds))
  stats = interleave.ratio_stats(seconds, reference)
  rows = []
  for name, s in stats.items():
    count = pool_size[name]
    cores = min(count, os.cpu_count() or 1)
    rate = executions / s['median_s']
    rows.append(
        {
            'executor': name,
            'workers': count,
            'median s': s['median_s'],
            'executions/s': rate,
            'per core': rate / cores,
            f'x {reference} (min-max)': f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})",
        }
    )
  extra = {
      'programs': len(programs),
      'executions': executions,
      'rounds': rounds,
      'isolation': isolation,
  }
  if BARC in last:
    extra['library_check'] = library_check(last[_ours(max(workers))], last[BARC])
  return report.report(
      f'Program executions per second: {len(programs)} BARC seeds x their inputs '
      f'({executions} executions), timeout {timeout_s:g} s',
      rows,
      out=out,
      **extra,
  )
