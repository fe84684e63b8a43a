"""Makes tests/train/ttt_testlib.py importable (also from subprocess scripts)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
