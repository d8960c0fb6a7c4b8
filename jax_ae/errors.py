"""The base class of every error a user can fix.

The command lines catch UserError alone: one line, exit code 2. Any other exception is a
bug and keeps its traceback, so a bug never prints as advice.
"""


class UserError(Exception):
  """Bad data, a bad setting, a damaged checkpoint, a busy workdir; str() is one line that
  says what to do."""


class ConfigError(UserError):
  """A bad setting."""


class DataError(UserError):
  """A user-fixable data problem; str() is one line that says what to do."""


def first_line(error, limit=160):
  """The first line of an exception's message (its type's name when it has none), cut to
  limit characters: the reason inside a one-line UserError."""
  return (str(error).splitlines() or [type(error).__name__])[0][:limit]
