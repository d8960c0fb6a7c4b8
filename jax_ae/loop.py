"""The host loop: the data to the device, the training step compiled once per call length
(two programs at most), evaluations, checkpoints, the log, and stopping cleanly on SIGINT or
SIGTERM."""
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jax_ae import data, inference, parallel, rundir, runtime, update
from jax_ae.config import ConfigError
from jax_ae.errors import UserError


class TrainingDiverged(UserError):
  """A NaN or infinite loss; the last good checkpoint is kept."""


class Stopped(Exception):
  """Training stopped on a signal after checkpointing; str() says how to resume."""

  def __init__(self, message, signum):
    super().__init__(message)
    self.signum = signum


def train(config, workdir, resume=False, plan=None, dataset=None):
  """Trains (or resumes) the run in workdir; returns the final TrainState.

  plan: how a call runs its steps (update.StepPlan); None: update.plan_steps's choice for
  the devices in use. dataset: config.data as data.load_dataset returns it, when the caller
  has loaded it already (train.py, to name a new run's folder after the data it resolved to).
  """
  workdir, started = Path(workdir), time.perf_counter()
  with StopSignals(workdir) as signals:
    dataset = data.load_dataset(config.data) if dataset is None else dataset
    num_train = len(dataset.train.images)
    if config.batch_size > num_train:
      raise ConfigError(f'--batch-size {config.batch_size} is larger than the {num_train} '
                        f'training images of {dataset.name}: choose a smaller one')
    mesh = parallel.make_mesh(config.devices, config.batch_size)
    platform = mesh.devices.flat[0].platform
    plan = plan or _plan_steps(platform, config, workdir if resume else None)
    # Record what was resolved ('mnist' may fall back to 'mnist5k'; an idx: folder made
    # absolute; the steps per call depend on the backend), so that analyze.py and a resume
    # use the same.
    config = dataclasses.replace(config, data=rundir.resolved_data(dataset.name),
                                 steps_per_dispatch=plan.steps_per_call)
    run = rundir.open_for_training(workdir, config, resume, writer=jax.process_index() == 0,
                                   num_train=num_train)
    try:
      return _train(config, dataset, mesh, plan, runtime.compiler_options(platform), run,
                    signals, started)
    finally:
      run.close()


def _plan_steps(platform, config, resumed_workdir):
  try:
    return update.plan_steps(platform, config.steps_per_dispatch)
  except ConfigError:
    # A run moved from an accelerator to a CPU: its saved steps per call do not fit here.
    saved = resumed_workdir and rundir.saved_config(resumed_workdir)
    if not saved or saved.get('steps_per_dispatch') != config.steps_per_dispatch:
      raise
    return update.plan_steps(platform)


def _train(config, dataset, mesh, plan, compiler_options, run, signals, started):
  num_train = len(dataset.train.images)
  steps_per_epoch = config.steps_per_epoch(num_train)
  total_steps = config.total_steps(dataset.name, num_train)
  eval_every = config.eval_interval(num_train)
  optimizer = update.make_optimizer(config.lr, config.weight_decay)
  state = run.restore_latest(parallel.replicated_init(
      lambda: update.init_state(config.seed, optimizer, config.latent_dim, config.init), mesh))
  step = saved_step = int(state.step)
  say = tqdm.write if run.writer else lambda line: None
  if step > total_steps:
    raise ConfigError(f'the run in {run.path} is at step {step}, past the {total_steps} steps '
                      'asked for: ask for more with --steps or --epochs, or analyse it as it is')
  if step == total_steps and step:
    say(f'the run in {run.path} has already done its {step} steps: nothing to train; ask for '
        'more with --steps or --epochs')
    return state
  run.write_config(config)
  where = runtime.describe()
  run.log({'event': 'start', 'step': step, 'devices_used': mesh.devices.size,
           'steps_per_call': plan.steps_per_call, 'unrolled': plan.unroll, **where})
  if run.exact and not _is_call_boundary(step, eval_every, total_steps, plan.steps_per_call):
    say(f'warning: step {step}, where the run stopped, is inside a call of this run\'s '
        'schedule (its length changed): it will end within rounding of an uninterrupted run, '
        'not bit for bit')
  dispatch = Dispatch(optimizer, plan, mesh, dataset.train.images, config.seed,
                      config.batch_size, compiler_options)
  peers = parallel.PeerWatch(lambda: (
      f'the last complete checkpoint (step {max(run.checkpoint_steps(), default=0)}) in '
      f'{run.path} is usable: start every process again with --resume '
      f'(--workdir {shlex.quote(str(run.path))})'))

  with tqdm(total=total_steps, initial=step, unit='step', dynamic_ncols=True,
            disable=not run.writer, desc='training') as bar:
    say(f'{where["backend"]}: {where["device_count"]} x {where["device_kind"]}, '
        f'{mesh.devices.size} in use, {where["process_count"]} process(es), '
        f'jax {where["versions"]["jax"]}')
    segment_losses, log_losses, call_seconds, timed_steps = [], [], 0.0, 0
    with peers.waiting('agreeing whether to stop'):
      stopping = signals.agreed()
    while step < total_steps and not stopping:
      segment_end = min((step // eval_every + 1) * eval_every, total_steps)
      length = update.call_length(step, segment_end, plan.steps_per_call)
      if length not in dispatch.programs:
        bar.set_description('compiling')
        seconds, cached = dispatch.compile(state, length)
        run.log({'event': 'compile', 'step': step, 'steps_per_call': length,
                 'seconds': round(seconds, 3), 'cached': cached})
        say(f'training step ({length} per call) '
            f'{"loaded from the compilation cache" if cached else "compiled"} in {seconds:.1f} s')
        bar.set_description('training')
      call_start = time.perf_counter()
      with peers.waiting(f'the call of steps {step + 1}..{step + length}'):
        state, losses = dispatch(state, step, length)
        losses = np.asarray(losses)  # waits for the device
      call_seconds += time.perf_counter() - call_start
      if timed_steps == 0:
        # From train()'s start: loading the data, restoring, compiling, the first call.
        run.log({'event': 'first_update', 'step': step + length,
                 'seconds': round(time.perf_counter() - started, 3)})
      timed_steps += length
      _check_finite(losses, step, run)
      for done, loss in enumerate(losses, start=step + 1):
        log_losses.append(loss)
        if done % rundir.TRAIN_LOG_EVERY == 0:
          run.log({'event': 'train', 'step': done, 'train_loss': float(np.mean(log_losses))})
          log_losses = []
      segment_losses.extend(losses)
      step += length
      images_per_s = timed_steps * config.batch_size / call_seconds
      bar.update(length)
      bar.set_postfix(loss=f'{losses[-1]:.4f}', img_s=f'{images_per_s:.0f}')
      with peers.waiting('agreeing whether to stop'):
        stopping = signals.agreed()
      if step == segment_end or (stopping and step > saved_step):
        test_mse = float(np.mean(inference.image_errors(parallel.local_copy(state.params),
                                                        dataset.test.images)))
        # A checkpoint is written only for a finite evaluation: a resume, analyze.py and
        # the divergence message all take every checkpoint for a good model.
        _check_finite([test_mse], step - 1, run, 'the test MSE')
        # The record first: a kill between the two leaves a record past the last
        # checkpoint, which a resume drops, never a checkpoint missing from the log.
        run.log({'event': 'eval', 'step': step, 'epoch': round(step / steps_per_epoch, 3),
                 'train_loss': float(np.mean(segment_losses)), 'test_mse': test_mse,
                 'images_per_s': round(images_per_s, 1)})
        with peers.waiting(f'the checkpoint of step {step}'):
          run.save(state, test_mse)
        saved_step = step
        if not stopping:  # a signal that came during the save stops here, not a call later
          with peers.waiting('agreeing whether to stop'):
            stopping = signals.agreed()
        say(f'step {step}: train loss {np.mean(segment_losses):.5f}, test MSE/pixel '
            f'{test_mse:.5f}, {images_per_s:.0f} images/s')
        segment_losses = []
  if stopping:
    signum = signals.received or signal.SIGTERM  # or another process's signal
    where = (f'its checkpoint is in {run.path}' if step == saved_step and step else
             'no checkpoint was written')
    raise Stopped(f'stopped by {signal.Signals(signum).name} at step {step}; {where}: '
                  f'continue with {resume_command(run.path)}', signum)
  return state


def resume_command(workdir):
  """The command line that continues the run in workdir, quoted for a POSIX shell."""
  return f'python train.py --workdir {shlex.quote(str(workdir))} --resume'


def _check_finite(values, step, run, what='loss'):
  """Raises TrainingDiverged if any of the values of steps step + 1, ... is not finite."""
  if not np.all(np.isfinite(values)):
    bad = int(np.argmin(np.isfinite(values)))
    kept = ('no checkpoint was written' if not run.checkpoint_steps() else
            f'the last good checkpoint (step {max(run.checkpoint_steps())}) in {run.path} is kept')
    raise TrainingDiverged(f'{what} is {values[bad]} at step {step + bad + 1}: training stopped; '
                           f'{kept}; try a lower --lr')


class Dispatch:
  """The calls of train steps as the loop makes them, for the loop and for bench/: the
  training split on the devices as (N, 784) uint8 (see update.make_train_steps), the batch
  rows of any step, and a program compiled ahead of time per call length."""

  def __init__(self, optimizer, plan, mesh, train_images, seed, batch_size, compiler_options):
    self.train_steps = update.make_train_steps(optimizer, plan)
    self.mesh, self.seed, self.batch_size = mesh, seed, batch_size
    self.compiler_options = compiler_options
    self.images = parallel.replicate(train_images.reshape(len(train_images), -1), mesh)
    self.programs = {}  # steps per call -> compiled program

  def rows(self, step, length):
    """(length, B) rows of the batches of steps step .. step + length - 1, split on the mesh."""
    return parallel.shard_batches(update.batch_schedule(
        self.seed, len(self.images), self.batch_size, step, length), self.mesh)

  def compile(self, state, length):
    """Compiles the program of `length` steps a call: (seconds, whether from the cache)."""
    began, cache_hits = time.perf_counter(), runtime.cache_hits()
    self.programs[length] = parallel.compile_train_steps(
        self.train_steps, self.mesh, state, self.images, self.rows(0, length),
        self.compiler_options)
    return time.perf_counter() - began, runtime.cache_hits() > cache_hits

  def __call__(self, state, step, length):
    """(state, losses) after steps step + 1 .. step + length, in one call (asynchronous)."""
    return self.programs[length](state, self.images, self.rows(step, length))


def _is_call_boundary(step, eval_every, total_steps, steps_per_call):
  """Whether an uninterrupted run with these settings starts a call at `step`."""
  at = step - step % eval_every  # the start of step's segment
  end = min(at + eval_every, total_steps)
  while at < step:
    at += update.call_length(at, end, steps_per_call)
  return at == step


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
    received = self.received is not None
    if jax.process_count() == 1:
      return received
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(received))))

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
