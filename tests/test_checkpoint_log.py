"""checkpoint.read_log / open_log: the JSON-lines logs that runs append to and resume from."""

import json

from ttt_jax import checkpoint


def test_read_log_skips_a_torn_last_line_and_unreadable_ones(tmp_path):
  path = tmp_path / 'log.jsonl'
  assert checkpoint.read_log(str(path)) == []  # no log yet
  text = '{"a": 1}\nnot json\n{"b": 2}\n{"c": 3, "torn'
  path.write_text(text)
  assert checkpoint.read_log(str(path)) == [{'a': 1}, {'b': 2}]
  assert path.read_text() == text  # reading never changes the log


def test_open_log_starts_the_next_record_on_a_line_of_its_own(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text('{"a": 1}\n{"c": 3, "torn')
  with checkpoint.open_log(str(path)) as f:  # after a kill mid-write
    f.write(json.dumps({'c': 3}) + '\n')
  with checkpoint.open_log(str(path)) as f:  # after a clean end: nothing added
    f.write(json.dumps({'d': 4}) + '\n')
  assert checkpoint.read_log(str(path)) == [{'a': 1}, {'c': 3}, {'d': 4}]
  assert path.read_text() == '{"a": 1}\n{"c": 3, "torn\n{"c": 3}\n{"d": 4}\n'
  with checkpoint.open_log(str(tmp_path / 'new.jsonl')) as f:  # a new log
    f.write('{"e": 5}\n')
  assert (tmp_path / 'new.jsonl').read_text() == '{"e": 5}\n'
