"""Hugging Face Llama checkpoints <-> our params pytree, via safetensors (never torch or pickle).

One table maps every HF tensor name to our path: `{i}` marks a per-layer
tensor stacked on our leading layer axis, and `transpose` turns torch's
Linear layout [out, in] into ours [in, out]. Rotate-half RoPE needs no
permutation of q/k.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from ttt_jax import atomic_io, checked_read
from ttt_jax.errors import DamagedFileError
from ttt_jax.model import llama
from ttt_jax.model.config import ModelConfig

CONFIG_FILE = 'config.json'
SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'

# (HF name, our path, transpose)
TENSOR_TABLE: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ('model.embed_tokens.weight', ('embed',), False),
    ('model.layers.{i}.input_layernorm.weight', ('layers', 'attn_norm'), False),
    ('model.layers.{i}.self_attn.q_proj.weight', ('layers', 'q'), True),
    ('model.layers.{i}.self_attn.k_proj.weight', ('layers', 'k'), True),
    ('model.layers.{i}.self_attn.v_proj.weight', ('layers', 'v'), True),
    ('model.layers.{i}.self_attn.o_proj.weight', ('layers', 'o'), True),
    ('model.layers.{i}.post_attention_layernorm.weight', ('layers', 'mlp_norm'), False),
    ('model.layers.{i}.mlp.gate_proj.weight', ('layers', 'gate'), True),
    ('model.layers.{i}.mlp.up_proj.weight', ('layers', 'up'), True),
    ('model.layers.{i}.mlp.down_proj.weight', ('layers', 'down'), True),
    ('model.norm.weight', ('final_norm',), False),
    ('lm_head.weight', ('lm_head',), True),
)

# Buffers some older checkpoints carry that are not parameters.
_IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)


def _entries(config: ModelConfig) -> Iterator[tuple[str, tuple[str, ...], bool, int | None]]:
  """(HF name, our path, transpose, layer index or None) for every tensor of this config."""
  for pattern, path, transpose in TENSOR_TABLE:
    if path == ('lm_head',) and config.tie_word_embeddings:
      continue
    if '{i}' in pattern:
      for i in range(config.num_layers):
        yield pattern.format(i=i), path, transpose, i
    else:
      yield pattern, path, transpose, None


def _param_shapes(config: ModelConfig) -> dict:
  return jax.eval_shape(lambda: llama.init_params(config, jax.random.key(0)))


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


# Tensor dtypes (safetensors names) a checkpoint may store: every weight is a float.
_FLOAT_DTYPES = ('F16', 'BF16', 'F32', 'F64')


def _tensor_files(directory: str) -> dict[str, tuple[str, tuple[int, ...], str]]:
  """HF tensor name -> (the safetensors file holding it, its shape, its dtype), from the
  headers (single file or sharded with an index); no tensor data is read."""
  index_path = os.path.join(directory, INDEX_FILE)
  if os.path.exists(index_path):
    weight_map = checked_read.read_json_object(index_path).get('weight_map')
    if not isinstance(weight_map, dict):
      raise DamagedFileError(index_path, 'no "weight_map" object')
    files = sorted(set(weight_map.values()))
  elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
    weight_map, files = None, [SINGLE_FILE]
  else:
    raise FileNotFoundError(f'{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found')

  headers = {}
  for file in files:
    file_path = os.path.join(directory, file)
    if not os.path.exists(file_path):
      raise FileNotFoundError(f'{index_path}: lists {file}, which does not exist')
    with checked_read.open_safetensors(file_path) as f:
      for name in f.keys():
        if name in headers:
          raise ValueError(f'tensor {name!r} is in both {headers[name][0]} and {file}')
        tensor = f.get_slice(name)
        headers[name] = (file, tuple(tensor.get_shape()), tensor.get_dtype())
  if weight_map is not None:
    for name, file in weight_map.items():
      if headers.get(name, (None,))[0] != file:
        raise ValueError(
            f'{index_path}: lists tensor {name!r} in {file}, but {file} does not hold it'
        )
  return headers


def _read_config(directory: str, **options) -> ModelConfig:
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(
        f'{config_path} not found: {directory} is not a HF checkpoint directory'
    )
  hf_config = checked_read.read_json_object(config_path)
  try:
    return ModelConfig.from_hf(hf_config, **options)
  except ValueError as e:
    raise ValueError(f'{config_path}: {e}') from None


def check_hf(directory: str, **options) -> tuple[ModelConfig, dict[str, str]]:
  """What `load_hf` checks before reading any tensor data, from config.json and the
  safetensors headers only (cheap: a run checks a checkpoint it loads later up front):
  (config, HF tensor name -> file). Missing, unexpected, mis-shaped or non-float tensors
  and damaged files raise a ValueError naming the tensor and file."""
  config = _read_config(directory, **options)
  headers = _tensor_files(directory)
  entries = list(_entries(config))
  expected = {name for name, *_ in entries}
  missing = sorted(expected - headers.keys())
  if missing:
    raise ValueError(
        f'{directory}: tensor {missing[0]!r} is missing from the checkpoint '
        f'({len(missing)} missing in all)'
    )
  extra = [n for n in headers.keys() - expected if not n.endswith(_IGNORED_SUFFIXES)]
  if config.tie_word_embeddings and 'lm_head.weight' in extra:
    extra.remove('lm_head.weight')  # a tied model may still store its head; checked equal later
    entries.append(('lm_head.weight', ('embed',), False, None))
  if extra:
    name = sorted(extra)[0]
    raise ValueError(
        f'{os.path.join(directory, headers[name][0])}: unexpected tensor {name!r} '
        f'for a {config.num_layers}-layer Llama ({len(extra)} unexpected in all)'
    )
  shapes = _param_shapes(config)
  for name, path, transpose, layer in entries:
    file, shape, dtype = headers[name]
    want = _get(shapes, path).shape[0 if layer is None else 1 :]
    want = tuple(want[::-1] if transpose else want)
    if shape != want:
      raise ValueError(
          f'{os.path.join(directory, file)}: tensor {name!r} has shape {shape}, expected '
          f'{want} (config.json says so)'
      )
    if dtype not in _FLOAT_DTYPES:
      raise ValueError(
          f'{os.path.join(directory, file)}: tensor {name!r} has dtype {dtype}, '
          f'expected one of {_FLOAT_DTYPES}'
      )
  return config, {name: file for name, (file, _, _) in headers.items()}


def load_hf(
    directory: str,
    *,
    param_dtype: str = 'float32',
    compute_dtype: str = 'float32',
    remat: str = 'none',
) -> tuple[ModelConfig, dict]:
  """Reads config.json + model.safetensors (or shards + index) into (config, params).

  Everything `check_hf` checks is checked before any tensor is read: missing,
  unexpected, mis-shaped or non-float tensors, and damaged files, raise a ValueError
  naming the tensor and file.
  """
  config, name_to_file = check_hf(
      directory, param_dtype=param_dtype, compute_dtype=compute_dtype, remat=remat
  )
  dtype = config.param_jnp_dtype
  shapes = _param_shapes(config)
  handles = {
      file: checked_read.open_safetensors(os.path.join(directory, file))
      for file in set(name_to_file.values())
  }

  def read(name: str, transpose: bool) -> np.ndarray:
    tensor = handles[name_to_file[name]].get_tensor(name)
    return (tensor.T if transpose else tensor).astype(dtype)

  arrays = {}
  for name, path, transpose, layer in _entries(config):
    if layer is None:
      arrays[path] = read(name, transpose)
    else:
      if path not in arrays:
        arrays[path] = np.empty(_get(shapes, path).shape, dtype)
      arrays[path][layer] = read(name, transpose)

  if config.tie_word_embeddings and 'lm_head.weight' in name_to_file:
    head = read('lm_head.weight', False)
    if not np.array_equal(head, arrays[('embed',)]):
      raise ValueError(
          f'{os.path.join(directory, name_to_file["lm_head.weight"])}: tensor '
          "'lm_head.weight' differs from the embedding but tie_word_embeddings is true"
      )

  params = {'layers': {}}
  for path, array in arrays.items():
    target = params['layers'] if path[0] == 'layers' else params
    target[path[-1]] = jnp.asarray(array)
  return config, params


def save_hf(
    directory: str, config: ModelConfig, params: dict, *, max_shard_bytes: int = 5 * 2**30
) -> None:
  """Writes config.json and safetensors (sharded with an index above max_shard_bytes) in
  the layout `transformers.AutoModelForCausalLM.from_pretrained` loads."""
  os.makedirs(directory, exist_ok=True)
  atomic_io.write_json(os.path.join(directory, CONFIG_FILE), config.to_hf(), indent=2)

  entries = list(_entries(config))
  sizes = []
  for name, path, _, layer in entries:
    array = _get(params, path)
    sizes.append(array.nbytes // (array.shape[0] if layer is not None else 1))
  shards, current, current_bytes = [], [], 0
  for entry, size in zip(entries, sizes):
    if current and current_bytes + size > max_shard_bytes:
      shards.append(current)
      current, current_bytes = [], 0
    current.append(entry)
    current_bytes += size
  shards.append(current)

  def hf_tensor(path, transpose, layer) -> np.ndarray:
    array = _get(params, path)
    array = np.asarray(array if layer is None else array[layer])
    return np.ascontiguousarray(array.T if transpose else array)

  names = (
      [SINGLE_FILE]
      if len(shards) == 1
      else [f'model-{k + 1:05d}-of-{len(shards):05d}.safetensors' for k in range(len(shards))]
  )
  weight_map = {}
  for file, shard in zip(names, shards):
    tensors = {name: hf_tensor(path, transpose, layer) for name, path, transpose, layer in shard}
    with atomic_io.replacing(os.path.join(directory, file)) as tmp:
      safetensors.numpy.save_file(tensors, tmp, metadata={'format': 'pt'})
    weight_map |= {name: file for name in tensors}
  if len(shards) > 1:
    index = {'metadata': {'total_size': sum(sizes)}, 'weight_map': weight_map}
    atomic_io.write_json(os.path.join(directory, INDEX_FILE), index, indent=2)


def shrink_vocab(
    config: ModelConfig, params: dict, keep_ids: Sequence[int]
) -> tuple[ModelConfig, dict]:
  """Keeps only the embedding rows and LM-head columns of `keep_ids`, in that order: new
  token j is old token keep_ids[j]. A tied model stays tied."""
  keep = np.asarray(keep_ids)
  if keep.ndim != 1 or keep.size == 0 or not np.issubdtype(keep.dtype, np.integer):
    raise ValueError(
        f'shrink_vocab: keep_ids must be a non-empty 1-D list of ints, got {keep_ids!r}'
    )
  if len(set(keep.tolist())) != keep.size:
    raise ValueError('shrink_vocab: keep_ids has repeated ids')
  if keep.min() < 0 or keep.max() >= config.vocab_size:
    raise ValueError(
        f'shrink_vocab: keep_ids must lie in [0, {config.vocab_size}), got '
        f'min {keep.min()}, max {keep.max()}'
    )
  params = {**params, 'embed': params['embed'][keep]}
  if not config.tie_word_embeddings:
    params['lm_head'] = params['lm_head'][:, keep]
  return config.replace(vocab_size=int(keep.size)), params
