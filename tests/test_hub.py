"""Hugging Face ids (hf:owner/name), offline, against a hub cache laid out here the way
huggingface_hub lays it out (<type>s--owner--name/refs/main + snapshots/<commit>/)."""

import json

import jax
import pytest
from huggingface_hub import constants

from ttt_jax import hub
from ttt_jax.model import builtin, hf, llama
from ttt_jax.model.config import ModelConfig

COMMIT = 'a' * 40


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  """An empty hub cache, the hub unreachable (HF_HUB_OFFLINE), no memoised snapshots."""
  cache = tmp_path / 'hub'
  monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
  hub.snapshot.cache_clear()
  yield cache
  hub.snapshot.cache_clear()


def _cached_repo(cache, kind: str, repo_id: str):
  """The snapshot directory of a repo put into the cache at COMMIT (refs/main names it)."""
  root = cache / f'{kind}s--{repo_id.replace("/", "--")}'
  (root / 'refs').mkdir(parents=True)
  (root / 'refs' / 'main').write_text(COMMIT)
  snapshot = root / 'snapshots' / COMMIT
  snapshot.mkdir(parents=True)
  return snapshot


def test_ids_parse_as_the_hub_urls_name_repos():
  assert hub.parse('hf:owner/name') == ('owner/name', 'model')
  assert hub.parse('hf:datasets/owner/data') == ('owner/data', 'dataset')
  for bad in ('hf:', 'hf:name', 'hf:a/b/c', 'hf:owner/', 'owner/name'):
    with pytest.raises(ValueError, match='expected hf:owner/name'):
      hub.parse(bad)
  assert hub.local_path('/some/dir') == '/some/dir'


def test_a_cached_checkpoint_loads_by_id_offline(offline_cache):
  snapshot = _cached_repo(offline_cache, 'model', 'owner/tiny')
  config = ModelConfig.preset('tiny')
  params = llama.init_params(config, jax.random.key(0))
  hf.save_hf(str(snapshot), config, params)
  assert builtin.resolve('hf:owner/tiny') == str(snapshot)
  loaded_config, loaded = builtin.load_model('hf:owner/tiny')
  assert loaded_config.hidden_size == config.hidden_size
  assert jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), loaded, params))


def test_a_cached_dataset_by_id_offline(offline_cache):
  snapshot = _cached_repo(offline_cache, 'dataset', 'owner/data')
  (snapshot / 'rows.jsonl').write_text(json.dumps({'uid': 'x'}) + '\n')
  assert hub.local_path('hf:datasets/owner/data') == str(snapshot)


def test_an_id_not_in_the_cache_offline_names_the_id_and_the_cache(offline_cache):
  with pytest.raises(FileNotFoundError) as e:
    hub.snapshot('hf:owner/absent')
  assert 'hf:owner/absent' in str(e.value) and str(offline_cache) in str(e.value)
  assert 'huggingface-cli download owner/absent' in str(e.value)
  with pytest.raises(FileNotFoundError, match='--repo-type dataset'):
    hub.snapshot('hf:datasets/owner/absent')
