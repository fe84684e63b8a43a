"""The peer of the execution bench: BARC's own executor, run in BARC's own environment.

Not part of ttt_jax's imports: `ttt_jax.bench.execution` runs this file with
the Python of a separate environment that has BARC's requirements (numpy,
pebble, func_timeout), pointing --barc_dir at a checkout of xu3kev/BARC
(which lives outside this repository: it has no licence). It calls BARC's
`execution.multi_execute_transformation` once on every (program, input) pair,
as BARC's eval_code_samples.py does (pebble pool, the library source executed
with every execution, random seed 0), and writes the wall time and each
output (a grid as lists, or the string BARC returns for a failure) as JSON.

  BARC_VENV/bin/python ttt_jax/bench/barc_executor_peer.py --barc_dir=BARC \
      --jobs=jobs.json --out=peer.json --workers=2

jobs.json: {"function_name": "main", "timeout_s": 2, "programs": [{"source": ..., "inputs": [grid, ...]}, ...]}
"""

import argparse
import json
import os
import sys
import time


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--barc_dir', required=True)
  parser.add_argument('--jobs', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--workers', type=int, required=True)
  args = parser.parse_args()
  with open(args.jobs) as f:
    jobs = json.load(f)
  os.chdir(args.barc_dir)  # execution.py reads seeds/common.py relative to the working dir
  sys.path.insert(0, args.barc_dir)
  import execution  # pylint: disable=import-outside-toplevel,import-error (BARC's module)

  sources, grids, shape = [], [], []
  for program in jobs['programs']:
    shape.append(len(program['inputs']))
    for grid in program['inputs']:
      sources.append(program['source'])
      grids.append(grid)
  start = time.perf_counter()
  outputs = execution.multi_execute_transformation(
      sources,
      grids,
      random_seeds=[0] * len(sources),
      timeout=jobs['timeout_s'],
      function_name=jobs['function_name'],
      num_workers=args.workers,
  )
  wall_s = time.perf_counter() - start
  flat = [o.tolist() if hasattr(o, 'tolist') else str(o) for o in outputs]
  nested, at = [], 0
  for count in shape:
    nested.append(flat[at : at + count])
    at += count
  with open(args.out, 'w') as f:
    json.dump({'wall_s': wall_s, 'executions': len(sources), 'outputs': nested}, f)


if __name__ == '__main__':
  main()
