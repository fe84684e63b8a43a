"""Checkpoints and data sets by Hugging Face id as well as by directory.

`hf:owner/name` is a model repo and `hf:datasets/owner/name` a dataset repo, as the
hub's own URLs name them. `snapshot` fetches one with huggingface_hub's
`snapshot_download` into the hub's cache (HF_HUB_CACHE) and gives its directory; a
repo already there is used as is when the hub cannot be reached. huggingface_hub is an
optional extra: `pip install -e '.[hub]'`.
"""

from __future__ import annotations

import functools

PREFIX = 'hf:'
# What a checkpoint needs (config, weights, tokenizer files): not the original/*.pth
# copies some repos also carry.
CHECKPOINT_FILES = ('*.json', '*.safetensors')


def is_hub_id(ref: str) -> bool:
  return ref.startswith(PREFIX)


def parse(ref: str) -> tuple[str, str]:
  """`hf:owner/name` -> ('owner/name', 'model'); `hf:datasets/owner/name` -> (..., 'dataset')."""
  parts = ref[len(PREFIX) :].split('/') if is_hub_id(ref) else []
  repo_type = 'model'
  if len(parts) == 3 and parts[0] == 'datasets':
    repo_type, parts = 'dataset', parts[1:]
  if len(parts) != 2 or not all(parts):
    raise ValueError(f'{ref!r}: expected hf:owner/name or hf:datasets/owner/name')
  return '/'.join(parts), repo_type


@functools.cache
def snapshot(ref: str, allow_patterns: tuple[str, ...] | None = None) -> str:
  """The local directory of hub repo `ref` (downloaded into the hub's cache if need be)."""
  repo_id, repo_type = parse(ref)
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    from huggingface_hub import errors  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError(
        f"{ref}: Hugging Face ids need the huggingface_hub package: pip install -e '.[hub]' "
        '(or give a directory)'
    ) from None
  try:
    return huggingface_hub.snapshot_download(
        repo_id, repo_type=repo_type, allow_patterns=list(allow_patterns or ()) or None
    )
  except (errors.LocalEntryNotFoundError, errors.HfHubHTTPError) as e:
    flag = ' --repo-type dataset' if repo_type == 'dataset' else ''
    raise FileNotFoundError(
        f'{ref}: not in the Hugging Face cache {huggingface_hub.constants.HF_HUB_CACHE} and '
        f'the hub cannot give it here ({type(e).__name__}); where the hub is reachable run '
        f'`huggingface-cli download {repo_id}{flag}` with the same HF_HUB_CACHE, or give a '
        'directory'
    ) from e


def local_path(ref: str, allow_patterns: tuple[str, ...] | None = None) -> str:
  """`ref` itself, or the directory of the hub repo it names."""
  return snapshot(ref, allow_patterns) if is_hub_id(ref) else ref
