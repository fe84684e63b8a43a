"""Benchmark: our TTT step vs the reference stack's way, transformers + peft
training one task's LoRA adapter after another.

Same model (ours, exported with `hf.save_hf`, loaded as
`transformers.LlamaForCausalLM`), same adapters (each task's initial A/B
exported with `checkpoint.export_peft_adapter` and loaded into the peft
model), same batches (`ttt_step.draw_batch`), same optimizer (global-norm clip ->
AdamW, same lr schedule, betas, eps, weight decay), float32. Three ways:

  vmap  one jitted step trains all T tasks' adapters (ttt_step.train_step), slots vmapped
  map   the same step with its slots one after another (over_slots='map', lax.map: what
        'auto' runs on a CPU)
  loop  T single-task jitted steps
  hf    T tasks one after another, each a torch AdamW loop (peft model)

They are timed in interleaved rounds (interleave.py: each round runs all three, in a
rotated order; ratios are per round), and the table gives achieved GFLOP/s (model
FLOPs as mfu.py counts them, the same for all three) against the machine's measured
f32 matmul peak. The same run checks that it is the same work: after `check_steps` steps of
each task, peft's adapters (read back with `checkpoint.load_peft_adapter`)
equal ours, and the first step's losses and B-gradients agree.

torch / transformers / peft are test-only dependencies, imported in here only.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import jax
import numpy as np

from ttt_jax import checkpoint
from ttt_jax.bench import interleave, mfu, report, workload
from ttt_jax.data.ttt_data import TTTArrays
from ttt_jax.model import hf, llama
from ttt_jax.model.config import ModelConfig
from ttt_jax.model.lora import TARGETS
from ttt_jax.model.lora import LoraConfig
from ttt_jax.train import optim, ttt_step
from ttt_jax.train.loss import loss_one
from ttt_jax.train.ttt_config import TTTConfig, total_steps

ALL_TARGETS = tuple(TARGETS)


def _task(arrays: TTTArrays, t: int) -> TTTArrays:
  return jax.tree.map(lambda x: x[t], arrays)


def _batches(arrays: TTTArrays, t: int, steps: int, ttt_config: TTTConfig) -> list[dict]:
  """Task t's batches for steps 0..steps-1, exactly as train_step draws them."""
  return [
      jax.tree.map(np.array, ttt_step.draw_batch(_task(arrays, t), t, step, ttt_config))
      for step in range(steps)
  ]


def _lrs(arrays: TTTArrays, t: int, steps: int, ttt_config: TTTConfig) -> np.ndarray:
  total = total_steps(arrays.num_examples[t], ttt_config)
  return np.asarray(
      ttt_config.lr * optim.warmup_cosine(np.arange(steps), total, ttt_config.warmup_frac)
  )


class _PeftTrainer:
  """A peft-wrapped LlamaForCausalLM whose 'default' adapter is swapped per task."""

  def __init__(self, model_dir: str, adapter_dir: str, ttt_config: TTTConfig):
    import peft  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel

    self.torch, self.peft, self.ttt_config = torch, peft, ttt_config
    base = transformers.LlamaForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation='sdpa'
    )
    self.model = peft.PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    self.model.train()
    self.params = [p for p in self.model.parameters() if p.requires_grad]

  def load(self, adapter_dir: str):
    """Sets the adapter from a PEFT dir; returns a fresh optimizer for it."""
    from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel

    weights = load_file(os.path.join(adapter_dir, checkpoint.ADAPTER_WEIGHTS))
    result = self.peft.set_peft_model_state_dict(self.model, weights)
    if getattr(result, 'unexpected_keys', None):
      raise ValueError(f'{adapter_dir}: keys peft does not know: {result.unexpected_keys[:3]}')
    c = self.ttt_config
    return self.torch.optim.AdamW(
        self.params, lr=c.lr, betas=(c.b1, c.b2), eps=c.eps, weight_decay=c.weight_decay
    )

  def loss(self, batch: dict):
    torch = self.torch
    tokens = torch.as_tensor(batch['tokens'], dtype=torch.long)
    logits = self.model(
        input_ids=tokens, attention_mask=torch.as_tensor(batch['mask'], dtype=torch.long)
    ).logits
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction='none'
    )
    weights = torch.as_tensor(batch['loss_mask'][:, 1:], dtype=torch.float32)
    return (ce * weights).sum() / weights.sum().clamp(min=1.0)

  def step(self, optimizer, batch: dict, lr: float) -> float:
    loss = self.loss(batch)
    loss.backward()
    self.torch.nn.utils.clip_grad_norm_(self.params, self.ttt_config.clip_norm)
    for group in optimizer.param_groups:
      group['lr'] = float(lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())

  def b_grads(self, batch: dict) -> dict:
    """d loss / d B of the current adapter (ours' layout: [L, r, out] per target)."""
    self.model.zero_grad(set_to_none=True)
    self.loss(batch).backward()
    grads = {}
    for name, module in self.model.named_modules():
      if name.endswith('lora_B.default'):
        layer = int(name.split('.layers.')[1].split('.')[0])
        target = {v: k for k, v in TARGETS.items()}[name.split('.')[-3]]
        grads.setdefault(target, {})[layer] = module.weight.grad.numpy().T.copy()
    self.model.zero_grad(set_to_none=True)
    return {t: np.stack([g[l] for l in sorted(g)]) for t, g in grads.items()}

  def adapter(self, directory: str, model_config: ModelConfig) -> dict:
    self.model.save_pretrained(directory)
    return checkpoint.load_peft_adapter(directory, model_config)[0]


def _check_same_work(
    params, arrays, trainer, tmp, model_config, ttt_config, check_steps: int
) -> dict:
  """Max |ours - peft| of the adapters after `check_steps` steps, of the first loss and
  of the first step's B-gradients (relative), over all tasks."""
  num_tasks = arrays.tokens.shape[0]
  slots, data = workload.fill_slots(arrays, range(num_tasks), model_config, ttt_config)
  b_grad_ours = jax.vmap(jax.grad(loss_one, argnums=1), in_axes=(None, 0, 0, None, None))(
      params,
      slots.lora,
      jax.vmap(ttt_step.draw_batch, in_axes=(0, 0, 0, None))(
          data, slots.seed, slots.step, ttt_config
      ),
      model_config,
      ttt_config.lora,
  )
  first_loss_T = None
  for _ in range(check_steps):
    slots, metrics = ttt_step.train_step(
        params, slots, data, model_config=model_config, ttt_config=ttt_config
    )
    first_loss_T = np.asarray(metrics['loss']) if first_loss_T is None else first_loss_T
  ours = jax.device_get(slots.lora)
  adapter_diff = loss_diff = grad_rel = 0.0
  for t in range(num_tasks):
    init_dir = os.path.join(tmp, f'init_{t}')
    optimizer = trainer.load(init_dir)
    batches = _batches(arrays, t, check_steps, ttt_config)
    grads = trainer.b_grads(batches[0])
    for name, g in grads.items():
      mine = np.asarray(b_grad_ours[name]['b'][t])
      grad_rel = max(grad_rel, np.abs(g - mine).max() / max(np.abs(mine).max(), 1e-30))
    for step, (batch, lr) in enumerate(zip(batches, _lrs(arrays, t, check_steps, ttt_config))):
      loss = trainer.step(optimizer, batch, lr)
      if step == 0:
        loss_diff = max(loss_diff, abs(loss - float(first_loss_T[t])))
    theirs = trainer.adapter(os.path.join(tmp, f'trained_{t}'), model_config)
    for name in theirs:
      for ab in ('a', 'b'):
        adapter_diff = max(adapter_diff, float(np.abs(theirs[name][ab] - ours[name][ab][t]).max()))
  return {
      'check_steps': check_steps,
      'adapter_max_abs_diff': adapter_diff,
      'first_loss_max_abs_diff': loss_diff,
      'b_grad_max_rel_diff': float(grad_rel),
  }


class _Ours:
  """Our step on fixed slots, timed `steps` steps at a time (after a compile step)."""

  def __init__(self, params, states, steps, model_config, ttt_config):
    self.args = (params, steps, model_config, ttt_config)
    self.states = workload.run_steps(params, states, 1, model_config, ttt_config)[1]

  def __call__(self) -> float:
    params, steps, model_config, ttt_config = self.args
    seconds, self.states, _ = workload.run_steps(
        params, self.states, steps, model_config, ttt_config
    )
    return seconds


def _hf_round(trainer, arrays, tmp, steps: int, ttt_config) -> float:
  """Seconds for `steps` steps of every task, tasks one after another (fresh adapter and
  optimizer each, loading included)."""
  seconds = 0.0
  for t in range(arrays.tokens.shape[0]):
    batches, lrs = _batches(arrays, t, steps, ttt_config), _lrs(arrays, t, steps, ttt_config)
    start = time.perf_counter()
    optimizer = trainer.load(os.path.join(tmp, f'init_{t}'))
    for batch, lr in zip(batches, lrs):
      trainer.step(optimizer, batch, lr)
    seconds += time.perf_counter() - start
  return seconds


def bench_vs_hf(
    preset: str = 'tiny',
    num_tasks: int = 4,
    batch_size: int = 4,
    seq_len: int = 1024,
    steps: int = 3,
    rank: int = 8,
    alpha: float = 16.0,
    targets: tuple[str, ...] = ALL_TARGETS,
    lr: float = 1e-4,
    torch_threads: int = 2,
    check_steps: int = 1,
    check_tol: float = 1e-4,
    rounds: int = 5,
    out: str | None = None,
) -> dict:
  """tokens/s of vmap / map / loop / hf on the same work, timed in interleaved rounds
  (interleave.py); raises if the same-work check fails."""
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(torch_threads)
  model_config = ModelConfig.preset(preset, param_dtype='float32', compute_dtype='float32')
  ttt_config = TTTConfig(
      lora=LoraConfig(rank=rank, alpha=alpha, targets=tuple(targets)),
      lr=lr,
      batch_size=batch_size,
      epochs=1000,
      warmup_frac=0.0,
  )
  params = llama.init_params(model_config, jax.random.key(0))
  arrays = workload.random_tasks(num_tasks, 4 * batch_size, seq_len, seed=0)
  fill = lambda tasks, c=ttt_config: workload.fill_slots(arrays, tasks, model_config, c)
  ours = {}
  for name in ('vmap', 'map'):
    config = dataclasses.replace(ttt_config, over_slots=name)
    ours[name] = _Ours(params, [fill(range(num_tasks), config)], steps, model_config, config)
  looped = [fill(range(t, t + 1)) for t in range(num_tasks)]
  ours['loop'] = _Ours(params, looped, steps, model_config, ttt_config)

  with tempfile.TemporaryDirectory() as tmp:
    hf.save_hf(os.path.join(tmp, 'model'), model_config, params)
    for t in range(num_tasks):
      checkpoint.export_peft_adapter(
          os.path.join(tmp, f'init_{t}'),
          jax.device_get(ttt_step.init_adapter(t, model_config, ttt_config)),
          ttt_config.lora,
          model_config,
      )
    trainer = _PeftTrainer(os.path.join(tmp, 'model'), os.path.join(tmp, 'init_0'), ttt_config)
    check = _check_same_work(params, arrays, trainer, tmp, model_config, ttt_config, check_steps)
    hf_round = lambda: _hf_round(trainer, arrays, tmp, steps, ttt_config)
    hf_round()  # warm-up
    seconds = interleave.interleaved({'hf': hf_round, **ours}, rounds)
  stats = interleave.ratio_stats(seconds, 'hf')
  peak = interleave.matmul_peak_flops()
  flops = mfu.ttt_step_flops(model_config, ttt_config.lora, num_tasks, batch_size, seq_len).total
  tokens = num_tasks * batch_size * seq_len
  rows = []
  for name, st in stats.items():
    per_step = st['median_s'] / steps
    rows.append(
        {
            'method': name,
            's/step (T tasks)': per_step,
            'tokens/s': tokens / per_step,
            'vs hf (median)': st['ratio_median'],
            'vs hf (min-max)': f'{st["ratio_min"]:.2f}-{st["ratio_max"]:.2f}',
            'GFLOP/s': flops / per_step / 1e9,
            '% of matmul peak': 100 * flops / per_step / peak,
        }
    )
  title = (
      f'TTT step: ours vs transformers+peft, {preset} ({model_config.num_params / 1e6:.2f}M '
      f'params), T={num_tasks}, batch {batch_size} x {seq_len}, LoRA r{rank} on '
      f'{",".join(targets)}, float32, torch threads {torch_threads}, {rounds} interleaved '
      f'rounds of {steps} steps'
  )
  result = report.report(
      title,
      rows,
      out=out,
      check=check,
      steps=steps,
      rounds=rounds,
      torch_threads=torch_threads,
      seconds_per_round=seconds,
      step_flops=flops,
      matmul_peak_flops=peak,
  )
  if check['adapter_max_abs_diff'] > check_tol or check['b_grad_max_rel_diff'] > 1e-3:
    raise AssertionError(f'ours and peft disagree: {check}')
  return result
