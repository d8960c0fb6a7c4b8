"""The base class of every error a user can fix.

The command lines catch UserError alone: one line, exit code 2. Any other exception is a
bug and keeps its traceback, so a bug never prints as advice.
"""


class UserError(Exception):
  """Bad data, a bad setting, a damaged checkpoint, a busy workdir; str() is one line that
  says what to do."""
