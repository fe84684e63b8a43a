"""How stage 3 predicts: decoding, batching, re-scoring, prompts and voting."""

from __future__ import annotations

import dataclasses

from ttt_jax.infer import decode, prompts, vote

DECODINGS = ('greedy', 'sample', 'dfs')
# 'hypotheses': decode once per output-shape hypothesis (infer/shapes.py) with forced row
# ends and EOS; 'grammar': any well-formed grid; 'none': free decoding. The constrained
# modes are for the compact format; 'auto' is 'hypotheses' there and 'none' for the text
# formats.
SHAPE_MODES = ('auto', 'hypotheses', 'grammar', 'none')


@dataclasses.dataclass(frozen=True)
class PredictConfig:
  decoding: str = 'greedy'  # one of DECODINGS
  shapes: str = 'auto'  # one of SHAPE_MODES
  temperature: float = 1.0  # 'sample'
  dfs_threshold: float = 0.1  # 'dfs': keep completions with probability >= this
  # Per row, at most its largest plausible answer (prompts.Variant.answer_budget): an answer
  # larger than every demonstration output and the test input is cut short (invalid).
  max_new_tokens: int = decode.MAX_GRID_TOKENS
  batch_size: int = 16  # decode rows per call (fixed: one compile per length)
  tasks_per_group: int = 8  # tasks whose adapters are stacked and decoded together
  # Prompt lengths padded to this x (1, 2, 3, 4, 6, 8, ...): few shapes, few compiles.
  length_multiple: int = 64
  score_augmentations: int = 0  # product-of-experts re-scoring; 0 = off
  # Decode and score each task with its adapter folded into the weights (W + scale a b,
  # merged for its decoding and again for its scoring): no LoRA matmuls per token, at the
  # price of one copy of the adapted weights alive while a task runs (for an 8B model with
  # all-projection adapters ~13 GB in bf16; False runs the LoRA path instead). Logits
  # agree to float rounding (bf16 weights: the merged weight is rounded to bf16 once more).
  merge_adapters: bool = True
  seed: int = 0
  prompts: prompts.PromptConfig = prompts.PromptConfig()
  vote: vote.VoteConfig = vote.VoteConfig()

  def __post_init__(self):
    if self.decoding not in DECODINGS:
      raise ValueError(f'PredictConfig.decoding {self.decoding!r} is not one of {DECODINGS}')
    if self.shapes not in SHAPE_MODES:
      raise ValueError(f'PredictConfig.shapes {self.shapes!r} is not one of {SHAPE_MODES}')
    if self.vote.rank_mode != 'votes' and self.score_augmentations < 1:
      raise ValueError(
          f'PredictConfig.score_augmentations: vote rank_mode {self.vote.rank_mode!r} needs '
          'scores; set score_augmentations >= 1'
      )
    for name in ('batch_size', 'tasks_per_group', 'length_multiple', 'max_new_tokens'):
      if getattr(self, name) < 1:
        raise ValueError(f'PredictConfig.{name} must be >= 1, got {getattr(self, name)}')
