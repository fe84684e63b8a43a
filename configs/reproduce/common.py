"""The paper's recipe (Akyürek et al. 2024, ekinakyurek/marc) in our configs: one function
the per-checkpoint files call with what differs between them.

A file's get_config('') is a combined config for `launch.demo` (TTT, then prediction
with and without the adapters); get_config('ttt') and get_config('predict') are its
two halves for launch.ttt and launch.predict.
"""

from ml_collections import config_dict

from configs import predict as predict_config
from configs import ttt as ttt_config
from ttt_jax.infer import prompts

# Text answers are longer than compact ones: a 30x30 grid is about 1.8k tokens as numpy
# text (marc), 1k as colour words (barc); the per-row budget (each variant's largest
# plausible answer) is what decoding uses, this only caps it.
TEXT_MAX_NEW_TOKENS = 2048


def recipe(
    arg: str, *, format_name: str, lr: float, loss: str, num_slots: int, loss_capacity: int
) -> config_dict.ConfigDict:
  if arg not in ('', 'ttt', 'predict'):
    raise ValueError(f"configs/reproduce: unknown argument {arg!r}; use '', 'ttt' or 'predict'")
  c = config_dict.ConfigDict()
  c.selector = 'arc1/eval'  # the paper's table: all 400 ARC-AGI-1 evaluation tasks
  c.checkpoint_dir = config_dict.placeholder(str)  # the downloaded checkpoint: required
  c.ttt = ttt_config.get_config('')
  c.predict = predict_config.get_config('')
  c.ttt.data.selector = c.predict.selector = c.get_ref('selector')
  for model in (c.ttt.model, c.predict.model):
    model.checkpoint_dir = c.get_ref('checkpoint_dir')
    model.format = format_name
    model.param_dtype = model.compute_dtype = 'bfloat16'
  # TTT (the paper): leave-one-out tasks under D8, colour and order augmentations, the
  # reference's size-changing augmenters (12 of its 23) as training-only ops, at most 250
  # examples of <= 8192 tokens; LoRA r128 alpha 16 (TTTConfig's defaults), 2 epochs of
  # batch 2, AdamW wd 0.01, cosine with 10% warm-up. --config.ttt.data.recipe=marc builds
  # the reference's own TTT data instead (docs/REPRODUCE.md).
  c.ttt.data.loss = loss
  c.ttt.data.train_only_prob = 0.5
  c.ttt.ttt.lr = lr
  c.ttt.ttt.loss_capacity = loss_capacity
  c.ttt.run.num_slots = num_slots
  c.ttt.run.checkpoint_every = 50
  # Inference (the paper): identity, transpose, two flips, rot90, rot180 x the original and
  # 2 random demonstration orders, greedy, hierarchical voting; prompts <= 8192 tokens
  # (the reference's vLLM max_model_len).
  c.predict.prompts.d8 = prompts.PAPER_D8
  c.predict.prompts.orders = 2
  c.predict.prompts.max_len = 8192
  c.predict.max_new_tokens = TEXT_MAX_NEW_TOKENS
  c.predict.batch_size = 16
  c.predict.length_multiple = 512
  c.predict.decoding = 'greedy'
  c.predict.vote.method = 'hierarchical'
  # An 8B model's merged adapter is a ~13 GB copy on the GPU; there the LoRA path costs
  # little (decoding reads the base weights either way).
  c.predict.merge_adapters = False
  if arg == 'ttt':
    return _standalone(c.ttt)
  if arg == 'predict':
    return _standalone(c.predict)
  return c


def _standalone(block: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """One half as a top-level config: the shared fields become its own."""
  out = config_dict.ConfigDict(block.to_dict())
  out.model.checkpoint_dir = config_dict.placeholder(str)
  return out
