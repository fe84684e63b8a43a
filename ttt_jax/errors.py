"""Errors a user made (a bad flag or config value, an unknown selector, a missing
checkpoint), as opposed to bugs: the launch scripts print them as one line
naming the flag, as absl does for a bad flag value, not as a traceback."""

from __future__ import annotations

import contextlib
import sys


class UserError(ValueError):
  """A bad value given by the user; the message names the flag or field."""


@contextlib.contextmanager
def blame(flag: str):
  """Re-raises a ValueError / FileNotFoundError inside the block as a UserError naming
  `flag` (e.g. 'config.data.selector'): wrap only code that checks that one value."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, FileNotFoundError) as e:
    raise UserError(f'--{flag}: {e}') from e


@contextlib.contextmanager
def as_usage_errors():
  """In a launch script's main(): a UserError ends the run with one line naming the flag,
  as absl reports a bad flag value (exit status 1), instead of a traceback."""
  try:
    yield
  except UserError as e:
    sys.stderr.write(f'FATAL {e}\nPass --helpfull to see help on flags.\n')
    sys.exit(1)
