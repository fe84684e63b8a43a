"""Programs from an induction model: N samples per task through the batched KV-cache decoder,
in rounds, each sample appended to a JSON-lines file as it is made.

Sample i of task t is drawn with the key `candidates.row_key(seed, t, i)` (predict's
rule), and a decoded row depends on its own prompt, key and budget alone
(infer/decode.py), so a sample is a function of (seed, task, index): the same on a
rerun, in any batch and in any selection of tasks. Round r gives every task its samples
r*R .. (r+1)*R - 1 (R = samples_per_round), so a run stopped early leaves every task
equally far; a rerun reads the file, keeps what is there (a torn last line is redone)
and goes on. A decode call prefills each task's prompt once for all its rows. A
program equal to an earlier sample's of the same task names that sample in
`duplicate_of`, so the sandbox runs each distinct program once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from ttt_jax import checkpoint
from ttt_jax.data import arc
from ttt_jax.data.arc import Task
from ttt_jax.dataclass_config import from_config_dict
from ttt_jax.errors import blame
from ttt_jax.formats.induction import InductionPrompt
from ttt_jax.infer import decode
from ttt_jax.infer.candidates import row_key
from ttt_jax.model import builtin
from ttt_jax.model.config import ModelConfig

SAMPLES_FILE = 'samples.jsonl'


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """How many programs per task and how they are drawn (defaults: BARC's
  finetune/inference/vllm_inference.py)."""

  num_samples: int = 2048  # programs per task (BARC: 2048, and 20k for its best number)
  samples_per_round: int = 64  # every task gets this many more per round
  temperature: float = 0.8
  top_p: float = 1.0
  max_new_tokens: int = 1536
  max_prompt_tokens: int = 8000  # longer prompts are skipped, as BARC skipped them
  batch_size: int = 16  # decode rows per call (fixed: one compile per prompt length)
  length_multiple: int = 256  # prompt lengths padded to this x (1, 2, 3, 4, 6, 8, ...)
  vllm_bos: bool = True  # the second <|begin_of_text|> vLLM gave BARC's prompts
  seed: int = 0

  def __post_init__(self):
    for name in (
        'num_samples',
        'samples_per_round',
        'max_new_tokens',
        'max_prompt_tokens',
        'batch_size',
        'length_multiple',
    ):
      if getattr(self, name) < 1:
        raise ValueError(f'SampleConfig.{name} must be >= 1, got {getattr(self, name)}')
    decode.Sampling(self.temperature, self.top_p)  # checks both

  @property
  def sampler(self) -> decode.Sampling:
    return decode.Sampling(self.temperature, self.top_p)


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled answer: its program (None when it has no closed code block), how many
  tokens it took, whether it ended with a stop token (False: cut off at the budget), its
  log-probability under the model, and the earlier sample of the task with the same
  program, if any."""

  task_id: str
  index: int
  program: str | None
  num_tokens: int
  finished: bool
  logprob: float
  duplicate_of: int | None = None

  @property
  def name(self) -> str:
    """`<task id>_<index>`: a program file name launch.verify_programs reads."""
    return f'{self.task_id}_{self.index}'

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: dict) -> Sample:
    return cls(**record)


def iter_samples(path: str) -> Iterator[Sample]:
  """The samples of a JSON-lines file in file order (none if it is absent)."""
  for record in checkpoint.iter_log(path):
    yield Sample.from_json(record)


def read_samples(path: str) -> dict[str, list[Sample]]:
  """{task_id: its samples in index order} of a JSON-lines file."""
  samples: dict[str, list[Sample]] = {}
  for sample in iter_samples(path):
    samples.setdefault(sample.task_id, []).append(sample)
  return {t: sorted(s, key=lambda x: x.index) for t, s in samples.items()}


def _digest(program: str) -> bytes:
  return hashlib.sha1(program.encode()).digest()


class _Log:
  """The samples file: which (task, index) it holds and where each distinct program of a
  task first appears (by digest: a 20k-sample run keeps no program text in memory)."""

  def __init__(self, path: str):
    self.done: dict[str, set[int]] = {}
    self.first: dict[str, dict[bytes, int]] = {}
    for s in iter_samples(path):
      self.done.setdefault(s.task_id, set()).add(s.index)
      if s.program is not None:
        first, digest = self.first.setdefault(s.task_id, {}), _digest(s.program)
        first[digest] = min(first.get(digest, s.index), s.index)
    self.out = checkpoint.open_log(path)

  def _first_of(self, task_id: str, program: str | None, index: int) -> int | None:
    """The earliest index of `program` in the task; None if `index` is the first."""
    if program is None:
      return None
    first = self.first.setdefault(task_id, {}).setdefault(_digest(program), index)
    return None if first == index else first

  def write(self, sample: Sample) -> None:
    sample = dataclasses.replace(
        sample, duplicate_of=self._first_of(sample.task_id, sample.program, sample.index)
    )
    self.out.write(json.dumps(sample.to_json()) + '\n')
    self.done.setdefault(sample.task_id, set()).add(sample.index)

  def count(self, task_ids: Sequence[str], num_samples: int) -> int:
    """How many of the tasks' first `num_samples` samples the file holds."""
    return sum(sum(i < num_samples for i in self.done.get(t, ())) for t in task_ids)

  def rounds(self, task_ids: Sequence[str], config: SampleConfig) -> Iterator[list]:
    """Per round, the (task, index) rows not yet in the file, task by task."""
    for start in range(0, config.num_samples, config.samples_per_round):
      stop = min(start + config.samples_per_round, config.num_samples)
      have = lambda t: self.done.get(t, ())
      yield [(t, i) for t in task_ids for i in range(start, stop) if i not in have(t)]


def _decode_rows(params, model_config, prompt, prompts, rows, config: SampleConfig):
  """Decodes one batch of (task, index) rows; [(tokens [n], logprob)] per row."""
  padded = rows + [rows[-1]] * (config.batch_size - len(rows))
  tokens_BS, lengths_B = decode.pad_prompts(
      [prompts[t] for t, _ in padded], config.batch_size, config.length_multiple, prompt.pad_id
  )
  first = {}  # a task's rows share its prompt: prefilled once
  source_B = np.array([first.setdefault(t, b) for b, (t, _) in enumerate(padded)], np.int32)
  out = decode.generate(
      params,
      model_config,
      tokens_BS,
      lengths_B,
      sampler=config.sampler,
      rng_B=jnp.stack([row_key(config.seed, t, i) for t, i in padded]),
      max_new_tokens=config.max_new_tokens,
      stop_ids=prompt.stop_ids,
      pad_id=prompt.pad_id,
      prompt_source_B=source_B,
  )
  seqs, counts, logps = (np.asarray(x) for x in out)
  return [(seqs[b, : counts[b]], float(logps[b])) for b in range(len(rows))]


def sample_programs(
    params: dict,
    model_config: ModelConfig,
    prompt: InductionPrompt,
    tasks: Sequence[Task],
    path: str,
    config: SampleConfig,
) -> list[str]:
  """Samples `config.num_samples` programs of every task into `path` (JSON lines), resuming
  what is there; returns the ids of the tasks sampled. A task whose prompt is longer than
  `max_prompt_tokens` gets none (said in the log)."""
  prompts = {}
  for task in tasks:
    ids = prompt.encode(task)
    length = len(ids) - prompt.vllm_bos  # BARC measured the template's ids: one BOS
    if length > config.max_prompt_tokens:
      logging.warning(
          'task %s: its prompt has %d tokens (> max_prompt_tokens %d): not sampled',
          task.id,
          length,
          config.max_prompt_tokens,
      )
    else:
      prompts[task.id] = ids
  task_ids = sorted(prompts, key=lambda t: len(prompts[t]))  # similar lengths share batches
  log = _Log(path)
  total, initial = len(task_ids) * config.num_samples, log.count(task_ids, config.num_samples)
  with log.out, tqdm(total=total, initial=initial, desc='sample') as bar:
    for rows in log.rounds(task_ids, config):
      for start in range(0, len(rows), config.batch_size):
        batch = rows[start : start + config.batch_size]
        decoded = _decode_rows(params, model_config, prompt, prompts, batch, config)
        for (task_id, index), (tokens, logprob) in zip(batch, decoded):
          finished = bool(tokens.size) and int(tokens[-1]) in prompt.stop_ids
          log.write(Sample(task_id, index, prompt.program(tokens), len(tokens), finished, logprob))
        log.out.flush()
        bar.update(len(batch))
  return task_ids


# ------------------------------------------------------------------ a run


@dataclasses.dataclass(frozen=True)
class SampleRun:
  """Which model samples which tasks, and how (a config's `model`, `selector`, `sample`)."""

  model: builtin.ModelSpec
  selector: str
  sample: SampleConfig

  @classmethod
  def from_config(cls, config) -> SampleRun:
    return from_config_dict(cls, config, where='config')


def run_sampling(run: SampleRun, output_dir: str) -> list[str]:
  """Loads the model and its tokenizer and samples every selected task into
  output_dir/samples.jsonl (resumably); returns the ids of the tasks sampled."""
  tasks = arc.load_selected(run.selector)
  with blame('config.model.checkpoint_dir'):
    model_config, params, directory = builtin.load_base_model(run.model)
    if directory is None:
      raise ValueError('sampling programs needs a checkpoint with its tokenizer files')
    prompt = InductionPrompt.from_checkpoint(directory, run.sample.vllm_bos)
    if prompt.chat.vocab_size > model_config.vocab_size:
      raise ValueError(
          f'the tokenizer has {prompt.chat.vocab_size} ids, the model only '
          f'{model_config.vocab_size}'
      )
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, SAMPLES_FILE)
  return sample_programs(params, model_config, prompt, tasks, path, run.sample)
