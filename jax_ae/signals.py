"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption): the
handlers, the agreement of a job's processes on when to stop, and the command that resumes."""
import os
import shlex
import signal
import sys
import threading

from jax_ae import parallel


class Stopped(Exception):
  """Training stopped on a signal after checkpointing; str() says how to resume."""

  def __init__(self, message, signum):
    super().__init__(message)
    self.signum = signum


def resume_command(workdir):
  """The command line that continues the run in workdir, quoted for a POSIX shell."""
  return f'python train.py --workdir {shlex.quote(str(workdir))} --resume'


class StopSignals:
  """SIGINT and SIGTERM: the first asks the loop to stop after the call in flight, with a
  checkpoint; a second stops at once (the last complete checkpoint stays usable)."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.received = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {signum: signal.signal(signum, self._handle)
                        for signum in (signal.SIGINT, signal.SIGTERM)}
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def agreed(self):
    """Whether any process of the job received a signal: they all stop at the same step."""
    return parallel.any_process(self.received is not None)

  def stopped(self, step, where):
    """The Stopped to raise at step; where: what was checkpointed."""
    signum = self.received or signal.SIGTERM  # or another process's signal
    return Stopped(f'stopped by {signal.Signals(signum).name} at step {step}; {where}: '
                   f'continue with {resume_command(self.workdir)}', signum)

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None:
      sys.stderr.write(f'\n{name} again: stopped at once; the last complete checkpoint in '
                       f'{self.workdir} is usable: continue with '
                       f'{resume_command(self.workdir)}\n')
      sys.stderr.flush()
      os._exit(128 + signum)  # no cleanup to wait for: the checkpoints are written atomically
    self.received = signum
    sys.stderr.write(f'\n{name}: stopping after the call in flight, with a checkpoint '
                     '(again to stop at once)\n')
