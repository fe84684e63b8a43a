"""Makes tests/formats/format_testlib.py (tokenizer directories) and this folder's
fake_release.py importable here."""

import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'formats'))
