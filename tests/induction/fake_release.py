"""A seeded data set in the layout of BARC's released induction results, with a matching
transduction side, for every task given. Plain Python (no ttt_jax), so the same files
are made outside this repository, where BARC's evaluation.py scores them for the golden
numbers of test_released.py.

Layout (what evaluation.py reads): root/<folder>/*.jsonl, one row per task per file,
{"uid", "train_verdicts": [bool per sample], "output_grids": [per sample: the outputs for
every demonstration input, then every test input]}; a task's samples are split over two
files. root/transduction.jsonl: one row per test input, its grid in the prompt as colour
words and two answers (evaluation.py's TRANSDUCTION_SAMPLE_FILE).
"""

import json
import os
import random

FOLDERS = ('ARC-Potpourri', 'ARC-Potpourri-AugmentedPrompt')
SAMPLES = 6  # per folder: what evaluation.py keeps (8 are written, the last 2 dropped)
WORDS = ('Black', 'Blue', 'Red', 'Green', 'Yellow', 'Gray', 'Pink', 'Orange', 'Purple', 'Brown')


def _words(grid) -> str:
  return '\n'.join(' '.join(WORDS[c] for c in row) for row in grid)


def _test_output(rng, truths, i):
  """The truth, another test input's truth (so a vote carried over matters), or junk."""
  r = rng.random()
  if r < 0.25:
    return truths[i]
  if r < 0.4:
    return truths[rng.randrange(len(truths))]
  return [[rng.randrange(3)]]


def write(root: str, tasks: dict, seed: int = 0) -> dict:
  """tasks: {uid: (number of demonstrations, [test inputs], [their true outputs])}, every
  grid a list of lists. Writes the files; returns the transduction side as a Kaggle
  submission {uid: [{'attempt_1', 'attempt_2'}, ...]}."""
  rng = random.Random(seed)
  rows = {folder: ([], []) for folder in FOLDERS}
  submission = {}
  for uid in sorted(tasks):
    num_train, _, truths = tasks[uid]
    rate = rng.choice((0.0, 0.0, 0.3, 0.8))  # a task's share of correct samples
    for folder in FOLDERS:
      verdicts = [rng.random() < rate for _ in range(SAMPLES + 2)]
      grids = [
          [[[0]]] * num_train + [_test_output(rng, truths, i) for i in range(len(truths))]
          for _ in verdicts
      ]
      for part, (lo, hi) in enumerate(((0, 3), (3, SAMPLES + 2))):
        rows[folder][part].append(
            {'uid': uid, 'train_verdicts': verdicts[lo:hi], 'output_grids': grids[lo:hi]}
        )
    submission[uid] = [
        {'attempt_1': _test_output(rng, truths, i), 'attempt_2': _test_output(rng, truths, i)}
        for i in range(len(truths))
    ]
  for folder, parts in rows.items():
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for part, part_rows in enumerate(parts):
      with open(os.path.join(root, folder, f'part-{part}.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in part_rows)
  with open(os.path.join(root, 'transduction.jsonl'), 'w') as f:
    for uid in sorted(tasks):
      inputs = tasks[uid][1]
      for i, entry in enumerate(submission[uid]):
        prompt = f'the test example:\nInput:\n{_words(inputs[i])}\nDirectly provide the output'
        answers = [f'```\n{_words(entry[k])}\n```' for k in ('attempt_1', 'attempt_2')]
        f.write(json.dumps({'prompt': prompt, 'responses': answers}) + '\n')
  return submission
