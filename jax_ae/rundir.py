"""A run directory, the one owner of its files:

  config.json    the Config the run was made with (the data and the steps per call resolved)
  metrics.jsonl  one JSON record a line: 'start' (where and how a process ran it, and the
                 run's steps per epoch), 'compile'
                 (a program's compile seconds), 'first_update', 'train' (the mean loss of every
                 TRAIN_LOG_EVERY steps), 'eval' (the test MSE, on the disk before the
                 checkpoint of that step is written); each with its wall-clock 'time' (unix
                 seconds)
  events.out.tfevents.*  the log's numbers for TensorBoard, where tensorboardX is installed
                 (jax_ae/tensorboard_log.py)
  checkpoints/   Orbax checkpoints of the whole train state: the latest KEEP_LATEST
  damaged/       checkpoints that could not be read, moved out of the way by a resume, never
                 deleted
  .lock          held by the process that trains in it, released by the kernel when it dies

The training loop and analyze.py use it; nothing else touches these files.
"""
import dataclasses
import errno
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_ae import dispatch, parallel, tensorboard_log
from jax_ae.config import TRAJECTORY_FIELDS, Config
from jax_ae.errors import ConfigError, UserError, first_line

RUNS_DIR = Path('runs')
KEEP_LATEST = 3
TRAIN_LOG_EVERY = 10  # steps per 'train' record


class RunDirError(UserError):
  """A workdir that cannot hold this run."""


class CheckpointError(UserError):
  """A checkpoint that cannot be written or used."""


def default_workdir(data):
  slug = ''.join(c if c.isalnum() else '-' for c in data.split('/')[-1] or data).strip('-')
  return RUNS_DIR / f'{slug}-{time.strftime("%Y%m%d-%H%M%S")}'


def latest_workdir():
  """The most recently started run under runs/, or None."""
  runs = [path.parent for path in RUNS_DIR.glob('*/config.json')]
  return max(runs, key=lambda run: (run / 'config.json').stat().st_mtime, default=None)


def resume_config(workdir, **flags):
  """The Config of the run in workdir with the flags given now over it (Config() if none).

  A length given now replaces the saved one: --epochs replaces a saved --steps too (which
  would override it).
  """
  path = Path(workdir) / 'config.json'
  saved = _read_config(path) if path.is_file() else {}
  if 'epochs' in flags and 'steps' not in flags:
    saved['steps'] = None
  return Config(**{**saved, **flags})


def _read_config(path):
  """config.json's fields, checked: a damaged or foreign file is one line, not a traceback."""
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise RunDirError(f'{path} cannot be read ({first_line(error)}): restore it, or choose another '
                      '--workdir') from None
  fields = {field.name for field in dataclasses.fields(Config)}
  if not isinstance(saved, dict) or not set(saved) <= fields:
    raise RunDirError(f'{path} is not the config.json of a jax-ae run: restore it, or choose '
                      'another --workdir')
  try:
    Config(**saved)
  except ConfigError as error:
    raise RunDirError(f'{path} holds a bad setting ({error}): restore it, or choose another '
                      '--workdir') from None
  return saved


def saved_config(workdir):
  """The config.json of the run in workdir as a dict, or None when it has none."""
  path = Path(workdir) / 'config.json'
  return _read_config(path) if path.is_file() else None


def resolved_data(source):
  """--data as a value: an idx: folder made absolute, so that the run resumes and is
  analysed from any directory."""
  if source.startswith('idx:'):
    return 'idx:' + os.path.abspath(source.removeprefix('idx:'))
  return source


def changed_settings(saved, config, num_train=None):
  """The TRAJECTORY_FIELDS on which config differs from the saved Config, compared as
  values: an idx: folder by where it is, an unset --eval-every as the one epoch it means."""
  def value(of, name):
    setting = getattr(of, name)
    if name == 'data' and setting.startswith('idx:'):
      return Path(setting.removeprefix('idx:')).resolve()
    if name == 'eval_every' and num_train is not None:
      return of.eval_interval(num_train)
    return setting
  return [name for name in TRAJECTORY_FIELDS if value(saved, name) != value(config, name)]


class Run:
  """An open run directory. Use open_for_training or open_for_reading."""

  def __init__(self, path, writer):
    self.path = Path(path)
    self.checkpoints = self.path.absolute() / 'checkpoints'  # Orbax misreads relative paths
    self.writer = writer  # one process of a job writes the config and the log
    self._lock = None
    self._manager = None  # Orbax's, for saving: opened when the restore has checked the folder
    self._events = None  # TensorBoard's view of the log: opened by this process's first record
    self.exact = True  # False: a resume already warned that it will not be bit for bit

  @property
  def config(self):
    return Config(**_read_config(self.path / 'config.json'))

  def write_config(self, config):
    if self.writer:
      path = self.path / 'config.json'
      temporary = path.with_suffix('.tmp')
      try:
        temporary.write_text(json.dumps(dataclasses.asdict(config), indent=2) + '\n')
        os.replace(temporary, path)
      except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _write_error(error, path) from None

  def records(self, event=None):
    """The metrics log's records, of one event or all; a line cut short by a kill is skipped."""
    records = []
    path = self.path / 'metrics.jsonl'
    for line in path.read_text().splitlines() if path.exists() else []:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
    return [r for r in records if event is None or r.get('event') == event]

  def log(self, record):
    """Appends a record to metrics.jsonl; an 'eval' record, and every one before it, is on
    the disk when this returns, before its checkpoint is written."""
    if not self.writer:
      return
    record = {**record, 'time': round(time.time(), 3)}
    try:
      with open(self.path / 'metrics.jsonl', 'a') as log:
        log.write(json.dumps(record) + '\n')
        if record['event'] == 'eval':
          log.flush()
          os.fsync(log.fileno())
    except OSError as error:
      raise _write_error(error, self.path / 'metrics.jsonl') from None
    if self._events is None:
      self._events = tensorboard_log.EventLog(self.path, record['step'])
    self._events.write(record)

  def checkpoint_steps(self):
    """The steps of the complete checkpoints (Orbax renames a save's folder when it is done)."""
    if not self.checkpoints.is_dir():
      return []
    return sorted(int(p.name) for p in self.checkpoints.iterdir() if p.name.isdigit())

  def save(self, state, test_mse):
    """Checkpoints the state; its 'eval' record must already be logged (see loop.py)."""
    step, previous = int(state.step), max(self.checkpoint_steps(), default=None)
    try:
      with _QuietOrbax():
        if self._manager is None:
          self._manager = _open_manager(self.checkpoints)
        self._manager.save(step, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()
    except Exception as error:
      if not _is_storage_error(error):
        raise  # a bug: its traceback, not advice
      full = 'No space left' in str(error)
      kept = 'no earlier checkpoint' if previous is None else f'the checkpoint of step {previous}'
      raise CheckpointError(
          f'could not write the checkpoint of step {step} in {self.checkpoints} '
          f'({"no space left on device" if full else first_line(error)}); {kept} is intact: '
          f'{"free some space" if full else "mend that"} and run again with --resume') from error

  def restore_latest(self, like_state):
    """The newest readable checkpoint's state (like_state itself when there is none).

    A checkpoint that cannot be read is reported in one line and moved to damaged/, so
    that the run can write its step again (and Orbax can open the folder); the metrics log
    loses the records past the restored step, so that it agrees with the checkpoints again.
    """
    steps = self.checkpoint_steps()
    state, damaged = like_state, []
    for step in reversed(steps):
      try:
        state = self._restore(step, like_state)
        break
      except _Damaged as damage:
        damaged.append(step)
        print(f'warning: {damage}: trying the one before', file=sys.stderr)
    else:
      if steps:
        raise CheckpointError(f'no checkpoint in {self.checkpoints} can be read (steps '
                              f'{", ".join(map(str, reversed(steps)))}): move that folder away '
                              'to train from the start, or use another --workdir')
    restored = int(state.step) if steps else 0
    # Orbax reads every checkpoint's own JSON files when it opens the folder.
    damaged += [step for step in steps if step < restored and _unparsed_orbax_file(
        self.checkpoints / str(step))]
    if self.writer:
      try:
        for step in damaged:
          self._set_aside(step)
        self._rewrite_log([r for r in self.records() if r['step'] <= restored])
      except OSError as error:
        raise _write_error(error) from None
    parallel.sync('jax_ae restored')  # every process sees the moves before anyone saves
    # Now, not at the first save: Orbax reads the folder as it opens it, and a folder it
    # cannot use must stop the run before it trains a segment.
    try:
      with _QuietOrbax():
        self._manager = _open_manager(self.checkpoints)
    except Exception as error:
      if not _is_storage_error(error):
        raise
      raise CheckpointError(f'{self.checkpoints} cannot be opened for checkpoints '
                            f'({first_line(error)}): make it writable, then run again') from None
    return state

  def load_params(self, step=None):
    """(params, step): the checkpoint of `step`, or the newest readable one.

    The params land on this host's first device, whatever devices the run used.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    like = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        dispatch.state_shape(self.config))
    steps = self.checkpoint_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f'{self.path} has no checkpoint of step {step}: it has '
                              f'{", ".join(map(str, steps)) or "none"}')
      try:
        return self._restore(step, like).params, step
      except _Damaged as damage:
        raise CheckpointError(f'{damage}: choose another step') from None
    if not steps:
      raise CheckpointError(f'{self.path} has no checkpoint yet: let train.py reach its first '
                            'evaluation')
    # The final one: choosing by test MSE would be a choice made on the test split.
    for step in reversed(steps):
      try:
        return self._restore(step, like).params, step
      except _Damaged as damage:
        print(f'warning: {damage}: using the one before', file=sys.stderr)
    raise CheckpointError(f'no checkpoint in {self.checkpoints} can be read: train again')

  def close(self):
    if self._manager is not None:
      self._manager.close()
    if self._events is not None:
      self._events.close()
    if self._lock is not None:
      os.close(self._lock)  # the kernel drops the flock with its last descriptor
      self._lock = None

  def _restore(self, step, like_state):
    """The state of one checkpoint, every item of it checked: _Damaged if its content is
    wrong; CheckpointError if it cannot be accessed (permissions, an I/O error), which says
    nothing of its content."""
    where = self.checkpoints / str(step)
    damaged = f'the checkpoint of step {step} in {where} cannot be read'
    _check_access(where)
    unparsed = _unparsed_orbax_file(where)
    if unparsed:
      raise _Damaged(f'{damaged} ({unparsed} is damaged)')
    checkpointer = ocp.StandardCheckpointer()
    try:
      saved = checkpointer.metadata(where / 'default').item_metadata
    except Exception as error:  # files missing, cut short or not Orbax's
      _raise_if_access(error, where)
      raise _Damaged(f'{damaged} ({first_line(error)})') from None
    if not saved or 'params' not in saved:
      raise _Damaged(f'{damaged} (its metadata names no params)')
    if _param_shapes(saved['params']) != _param_shapes(like_state.params):
      raise CheckpointError(f'the checkpoint in {where} holds a different model than this one; '
                            'use another --workdir')
    try:
      state = checkpointer.restore(where / 'default',
                                   jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state))
    except Exception as error:  # array files cut short or overwritten
      _raise_if_access(error, where)
      raise _Damaged(f'{damaged} ({first_line(error)})') from None
    # Written by an older jax-ae, which checkpointed a diverged model.
    if not all(np.isfinite(leaf.addressable_data(0)).all()
               for leaf in jax.tree.leaves(state.params)):
      raise _Damaged(f'the checkpoint of step {step} in {where} holds non-finite params')
    return state

  def _set_aside(self, step):
    target = self.path / 'damaged' / str(step)
    target.parent.mkdir(exist_ok=True)
    while target.exists():
      target = target.with_name(target.name + '+')
    os.replace(self.checkpoints / str(step), target)
    print(f'warning: the unreadable checkpoint of step {step} is kept in {target}',
          file=sys.stderr)

  def _rewrite_log(self, records):
    path = self.path / 'metrics.jsonl'
    if not path.exists():
      return
    temporary = path.with_suffix('.jsonl.tmp')
    temporary.write_text(''.join(json.dumps(r) + '\n' for r in records))
    os.replace(temporary, path)


class _Damaged(Exception):
  """A checkpoint that cannot be read; str() names it and why."""


# Orbax's JSON files in a checkpoint: it reads them when it opens the folder or restores.
# metrics/ is an item of the checkpoints of older jax-ae versions.
ORBAX_JSON_FILES = ('_CHECKPOINT_METADATA', 'metrics/metrics', 'default/_METADATA',
                    'default/_sharding')


def _unparsed_orbax_file(step_dir):
  """The first of step_dir's Orbax JSON files that does not parse, or None."""
  for name in ORBAX_JSON_FILES:
    try:
      json.loads((step_dir / name).read_text())
    except FileNotFoundError:
      continue
    except ValueError:
      return step_dir / name
    except OSError as error:
      raise _access_error(step_dir / name, error) from None
  return None


def _check_access(folder):
  """Raises CheckpointError naming the first file or folder under folder that cannot be
  opened for an error of access (permissions, I/O): not damage, so nothing is moved."""
  pending = [folder]
  while pending:
    current = pending.pop()
    try:
      entries = list(os.scandir(current))
    except FileNotFoundError:
      continue  # content missing: damage, for the restore to find
    except OSError as error:
      raise _access_error(current, error) from None
    for entry in entries:
      try:
        if entry.is_dir(follow_symlinks=False):
          pending.append(entry.path)
          continue
        with open(entry.path, 'rb') as file:
          file.read(1)
      except FileNotFoundError:
        continue
      except OSError as error:
        raise _access_error(entry.path, error) from None


def _raise_if_access(error, where):
  """Raises CheckpointError if an OSError of access caused `error` (Orbax wraps them)."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and not isinstance(
        seen, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
      raise _access_error(seen.filename or where, seen) from None
    seen = seen.__cause__ or seen.__context__


def _access_error(path, error):
  return CheckpointError(f'cannot read {path} ({error.strerror or first_line(error)}): the '
                         'checkpoint is left as it is; make it readable (permissions, the '
                         'mount) and run again')


def open_for_training(path, config, resume, writer=True, num_train=None):
  """Opens (or creates) the run directory of a training run, after checking that it may,
  and locks it. The config is written by Run.write_config, once the checkpoint is restored.

  writer: whether this process writes the config and the log (process 0 of a job).
  num_train: the training images, to compare an unset --eval-every as the epoch it means.
  Raises RunDirError or ConfigError before writing anything.
  """
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise RunDirError(f'--workdir {path} is a file: choose a folder')
  holds_run = (path / 'config.json').is_file()
  if holds_run and not resume:
    raise RunDirError(f'{path} already holds a run: pass --resume to continue it, or choose '
                      'another --workdir')
  if not holds_run and _has_checkpoints(path / 'checkpoints'):
    raise RunDirError(f'{path} holds checkpoints but no config.json, which says how they were '
                      'trained: restore it to resume, or choose another --workdir')
  exact = True
  if holds_run:
    saved = Config(**_read_config(path / 'config.json'))
    changed = changed_settings(saved, config, num_train)
    if changed:
      was = ', '.join(f'{name}={getattr(saved, name)!r}' for name in changed)
      raise ConfigError(f'{path} holds a run with {was}: resume with the same settings, or '
                        'choose another --workdir')
    if saved.steps_per_dispatch != config.steps_per_dispatch:
      exact = False
      if writer:
        print(f'warning: {path} was trained with {saved.steps_per_dispatch} steps per compiled '
              f'call, here it runs {config.steps_per_dispatch} (another backend, or '
              '--steps-per-dispatch): it continues within rounding of an uninterrupted run, '
              'not bit for bit', file=sys.stderr)
  parallel.sync('jax_ae checked the workdir')  # every process checked it before any writes
  try:
    path.mkdir(parents=True, exist_ok=True)
    lock = _lock(path) if writer else None
  except OSError as error:
    raise RunDirError(f'--workdir {path} cannot be written ({error.strerror}): choose a '
                      'folder you can write to') from None
  run = Run(path, writer)
  run._lock = lock
  run.exact = exact
  return run


def _has_checkpoints(folder):
  try:
    return any(folder.iterdir())
  except (FileNotFoundError, NotADirectoryError):
    return False


def open_for_reading(path):
  """The run directory of a finished or running run, for analysis."""
  path = Path(path)
  if not (path / 'config.json').is_file():
    raise RunDirError(f'{path} holds no run (no config.json): pass the --workdir of a '
                      'train.py run')
  return Run(path, writer=False)


def _lock(path):
  descriptor = os.open(path / '.lock', os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(descriptor)
    raise RunDirError(f'another train.py is training in {path} right now: wait for it to end, '
                      'or choose another --workdir') from None
  return descriptor


def _open_manager(directory):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=KEEP_LATEST,
      # A save is written to a temporary folder and renamed when complete; a save cut
      # short (kill -9, full disk) leaves such a folder, removed on the next open.
      cleanup_tmp_directories=True,
      enable_async_checkpointing=False,
  )
  return ocp.CheckpointManager(directory.absolute(), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


# The status codes with which TensorStore, under Orbax, reports a failing filesystem.
STORAGE_STATUS = ('RESOURCE_EXHAUSTED', 'PERMISSION_DENIED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED')


def _is_storage_error(error):
  """Whether error, or what caused it, is the storage failing (a full disk, a lost mount),
  not a bug: an OSError, or TensorStore's status of one."""
  while error is not None:
    if isinstance(error, OSError) or "os_error_code" in str(error) or str(error).startswith(
        STORAGE_STATUS):
      return True
    error = error.__cause__ or error.__context__
  return False


class _QuietOrbax:
  """Holds back Orbax's own reports of a failing save, which a CheckpointError explains in
  one line: its threads' logged tracebacks, and the unraisable 'Event loop is closed' of
  TensorStore callbacks that outlive the failed save (so that filter stays). Anything else,
  and the logs of a save that failed for a bug, go out as usual."""

  def __enter__(self):
    self.held, self.logger = [], logging.getLogger('absl')
    self.logger.addFilter(self._hold)
    self.previous_hook = sys.unraisablehook
    sys.unraisablehook = self._unraisable
    return self

  def __exit__(self, kind, error, traceback):
    self.logger.removeFilter(self._hold)
    if error is not None and _is_storage_error(error):
      return
    sys.unraisablehook = self.previous_hook
    for record in self.held:
      self.logger.handle(record)

  def _hold(self, record):
    self.held.append(record)
    return False

  def _unraisable(self, unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      self.previous_hook(unraisable)


def _write_error(error, path=None):
  """The RunDirError of a file of the run that could not be written."""
  full = error.errno == errno.ENOSPC
  return RunDirError(f'could not write {error.filename or path} '
                     f'({error.strerror or first_line(error)}): '
                     f'{"free some space" if full else "make the workdir writable"}, then '
                     'run again (--resume continues from the last checkpoint)')


def _param_shapes(params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}

