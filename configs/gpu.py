"""The numerics of every GPU recipe (`configs/{finetune,ttt,predict}.py:gpu`), written once.

bf16 weights and matmuls, as the paper ran; what stays float32 does so by
construction: LoRA adapters (`init_lora`'s dtype), their AdamW state (optax keeps
the params' dtype), softmax, norms, logits and the loss (ttt_jax/model/llama.py).
The attention kernel is the default 'auto': cuDNN flash attention on a GPU
for bf16 rows of one example, Pallas (Triton) flash attention for packed rows
(ttt_jax/model/attention_dispatch.py).
"""

PARAM_DTYPE = 'bfloat16'
COMPUTE_DTYPE = 'bfloat16'


def apply(model, *, trains_weights: bool = False) -> None:
  """Sets a config's `model` block (a ConfigDict of ModelSpec) to the GPU numerics.

  A run that trains the weights themselves (stage 1, full fine-tuning) keeps them
  float32: AdamW updates of ~lr * 1e-3 vanish when added to bf16 weights.
  """
  model.compute_dtype = COMPUTE_DTYPE
  if not trains_weights:
    model.param_dtype = PARAM_DTYPE
