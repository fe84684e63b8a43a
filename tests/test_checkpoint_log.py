"""checkpoint.read_log: the JSON-lines logs that runs append to and resume from."""

import json

from ttt_jax import checkpoint


def test_read_log_cuts_a_torn_last_line_and_skips_unreadable_ones(tmp_path):
  path = tmp_path / 'log.jsonl'
  assert checkpoint.read_log(str(path)) == []  # no log yet
  path.write_text('{"a": 1}\nnot json\n{"b": 2}\n{"c": 3, "torn')
  assert checkpoint.read_log(str(path)) == [{'a': 1}, {'b': 2}]
  assert path.read_text() == '{"a": 1}\nnot json\n{"b": 2}\n'  # the torn tail is gone
  with open(path, 'a') as f:  # so the next append is a whole line of its own
    f.write(json.dumps({'c': 3}) + '\n')
  assert checkpoint.read_log(str(path)) == [{'a': 1}, {'b': 2}, {'c': 3}]


def test_read_log_of_only_a_torn_line_is_empty(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text('{"a": ')
  assert checkpoint.read_log(str(path)) == [] and path.read_text() == ''
