"""Benchmark: our batched KV-cache greedy decoding vs transformers' `generate`.

Same random model (exported with hf.save_hf), same prompts, batch B, prompt
length P, N new tokens (EOS never stops a row, so every row makes N tokens).
Ours runs three ways: the base model; per-row adapters gathered from a stack
of T tasks (decode.Adapters, the vmap path); one shared adapter (what
grouping rows by task runs: decode.generate with Adapters.shared); that
adapter merged into the weights, timed with the merge (predict's default,
PredictConfig.merge_adapters). Timed in
interleaved rounds after a compile/warm-up run of each (interleave.py; ratios
to `generate` per round). Prints a table and writes JSON.

  python -m ttt_jax.bench.decode --preset=tiny --batch=16 --prompt_len=800 \
      --new_tokens=200 --out=/tmp/bench_decode.json
"""

from __future__ import annotations

import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ttt_jax.bench import interleave
from ttt_jax.infer import decode
from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import LoraConfig, init_lora

NEVER = -1  # an EOS id no token has: every row decodes the full N tokens
HF = 'transformers generate (base)'


def _hf_generate_timer(directory: str, tokens: np.ndarray, new_tokens: int):
  import torch  # test-only dependencies, imported here only
  import transformers

  model = transformers.LlamaForCausalLM.from_pretrained(
      directory, torch_dtype=torch.float32, attn_implementation='sdpa'
  ).eval()
  ids = torch.as_tensor(tokens, dtype=torch.long)
  kwargs = dict(
      attention_mask=torch.ones_like(ids),
      max_new_tokens=new_tokens,
      min_new_tokens=new_tokens,
      do_sample=False,
      pad_token_id=15,
      eos_token_id=None,
  )
  with torch.no_grad():
    model.generate(ids[:, :16], **{**kwargs, 'max_new_tokens': 2, 'min_new_tokens': 2})

  def timed() -> float:
    with torch.no_grad():
      start = time.perf_counter()
      out = model.generate(ids, **kwargs)
      seconds = time.perf_counter() - start
    assert out.shape == (tokens.shape[0], tokens.shape[1] + new_tokens), out.shape
    return seconds

  return timed


def benchmark_decode(
    preset: str = 'tiny',
    batch: int = 16,
    prompt_len: int = 800,
    new_tokens: int = 200,
    num_tasks: int = 4,
    rounds: int = 3,
    out: str | None = None,
) -> dict:
  """Decode tokens/s of each way; returns (and optionally writes) the results."""
  config = ModelConfig.preset(preset, param_dtype='float32', compute_dtype='float32')
  params = llama.init_params(config, jax.random.key(0))
  lora_config = LoraConfig(rank=8, alpha=16.0)
  stack = init_lora(jax.random.key(1), config, lora_config, num_tasks=num_tasks)
  tokens = np.random.default_rng(0).integers(0, 13, (batch, prompt_len)).astype(np.int32)
  lengths = np.full((batch,), prompt_len, np.int32)
  per_row = decode.Adapters(stack, jnp.arange(batch, dtype=jnp.int32) % num_tasks, lora_config)
  shared = decode.Adapters.shared(jax.tree.map(lambda x: x[0], stack), lora_config)

  ours = {
      'jax base': lambda: decode.generate(
          params, config, tokens, lengths, max_new_tokens=new_tokens, stop_ids=(NEVER,)
      ),
      f'jax per-row adapters ({num_tasks} tasks, gather)': lambda: decode.generate(
          params,
          config,
          tokens,
          lengths,
          adapters=per_row,
          max_new_tokens=new_tokens,
          stop_ids=(NEVER,),
      ),
      'jax one shared adapter (grouped by task)': lambda: decode.generate(
          params,
          config,
          tokens,
          lengths,
          adapters=shared,
          max_new_tokens=new_tokens,
          stop_ids=(NEVER,),
      ),
      'jax one adapter merged (predict on a CPU)': lambda: decode.generate(
          shared.merged_into(params),
          config,
          tokens,
          lengths,
          max_new_tokens=new_tokens,
          stop_ids=(NEVER,),
      ),
  }
  timers = {name: interleave.warm_timer(fn) for name, fn in ours.items()}
  with tempfile.TemporaryDirectory() as directory:
    hf.save_hf(directory, config, params)
    timers[HF] = _hf_generate_timer(directory, tokens, new_tokens)
  per_round = interleave.interleaved(timers, rounds)
  stats = interleave.ratio_stats(per_round, HF)

  generated = batch * new_tokens
  rows = {
      name: {
          'seconds': st['median_s'],
          'new_tokens_per_s': generated / st['median_s'],
          'vs_generate': st['ratio_median'],
          'vs_generate_min_max': (st['ratio_min'], st['ratio_max']),
      }
      for name, st in stats.items()
  }
  result = {
      'preset': preset,
      'batch': batch,
      'prompt_len': prompt_len,
      'new_tokens': new_tokens,
      'device': str(jax.devices()[0]),
      'rounds': rounds,
      'results': rows,
      'seconds_per_round': per_round,
  }
  print(
      f'decode, {preset}, batch {batch}, prompt {prompt_len}, {new_tokens} new tokens '
      f'({result["device"]}); seconds include the prefill; medians of {rounds} interleaved '
      'rounds'
  )
  print(f'| {"method":46s} | seconds | new tokens/s | vs generate (median, min-max) |')
  print(f'|{"-" * 48}|---------|--------------|-------------------------------|')
  for name, r in rows.items():
    lo, hi = r['vs_generate_min_max']
    print(
        f'| {name:46s} | {r["seconds"]:7.2f} | {r["new_tokens_per_s"]:12.0f} | '
        f'{r["vs_generate"]:.2f} ({lo:.2f}-{hi:.2f}) |'
    )
  if out:
    with open(out, 'w') as f:
      json.dump(result, f, indent=1)
  return result


def main(argv):
  del argv
  benchmark_decode(
      _PRESET.value,
      _BATCH.value,
      _PROMPT_LEN.value,
      _NEW_TOKENS.value,
      _NUM_TASKS.value,
      _ROUNDS.value,
      _OUT.value,
  )


if __name__ == '__main__':
  # Defined only when run as a script: launch/bench.py imports this module
  # and has flags of the same names.
  _PRESET = flags.DEFINE_string('preset', 'tiny', 'Model preset.')
  _BATCH = flags.DEFINE_integer('batch', 16, 'Rows decoded together.')
  _PROMPT_LEN = flags.DEFINE_integer('prompt_len', 800, 'Prompt tokens per row.')
  _NEW_TOKENS = flags.DEFINE_integer('new_tokens', 200, 'New tokens per row.')
  _NUM_TASKS = flags.DEFINE_integer('num_tasks', 4, 'Stacked adapters for the per-row run.')
  _ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved rounds.')
  _OUT = flags.DEFINE_string('out', None, 'Write the results JSON here.')
  app.run(main)
