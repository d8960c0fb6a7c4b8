"""The host loop: the data to the device, one compiled program called for the whole run,
evaluations, checkpoints, the log, and stopping cleanly on SIGINT or SIGTERM."""
import dataclasses
import os
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


def train(config, workdir, resume=False, plan=None):
  """Trains (or resumes) the run in workdir; returns the final TrainState.

  plan: how a call runs its steps (update.StepPlan); None: update.plan_steps's choice for
  the devices in use.
  """
  workdir, started = Path(workdir), time.perf_counter()
  with StopSignals(workdir) as signals:
    dataset = data.load_dataset(config.data)
    num_train = len(dataset.train.images)
    if config.batch_size > num_train:
      raise ConfigError(f'--batch-size {config.batch_size} is larger than the {num_train} '
                        f'training images of {dataset.name}: choose a smaller one')
    mesh = parallel.make_mesh(config.devices, config.batch_size)
    platform = mesh.devices.flat[0].platform
    plan = plan or update.plan_steps(platform, config.steps_per_dispatch)
    # Record what was resolved ('mnist' may fall back to 'mnist5k'; the steps per call
    # depend on the backend), so that analyze.py and a resume use the same.
    config = dataclasses.replace(config, data=dataset.name, steps_per_dispatch=plan.steps_per_call)
    run = rundir.open_for_training(workdir, config, resume, writer=jax.process_index() == 0)
    try:
      return _train(config, dataset, mesh, plan, runtime.compiler_options(platform), run,
                    signals, started)
    finally:
      run.close()


def _train(config, dataset, mesh, plan, compiler_options, run, signals, started):
  num_train = len(dataset.train.images)
  steps_per_epoch = num_train // config.batch_size
  total_steps = config.total_steps(dataset.name, num_train)
  eval_every = config.eval_interval(num_train)
  optimizer = update.make_optimizer(config.lr, config.weight_decay)
  state = run.restore_latest(parallel.replicate(update.init_state(config.seed, optimizer), mesh))
  run.write_config(config)
  images = parallel.replicate(dataset.train.images.reshape(num_train, -1), mesh)  # (N, 784)
  step = saved_step = int(state.step)
  say = tqdm.write if run.writer else lambda line: None
  where = runtime.describe()
  run.log({'event': 'start', 'step': step, 'devices_used': mesh.devices.size,
           'steps_per_call': plan.steps_per_call, 'unrolled': plan.unroll, **where})
  if not _is_call_boundary(step, eval_every, total_steps, plan.steps_per_call):
    say(f'warning: step {step}, where the run stopped, is inside a call of this run\'s '
        'schedule (its length changed): it will end within rounding of an uninterrupted run, '
        'not bit for bit')

  def rows(step, length):  # (K, B) rows of the batches of steps step .. step + K - 1
    return parallel.shard_batches(update.batch_schedule(
        config.seed, num_train, config.batch_size, step, length), mesh)

  programs = {}

  def program(length):  # compiled on first use: K steps a call, and 1 for segments' tails
    if length not in programs:
      bar.set_description('compiling')
      began, cache_hits = time.perf_counter(), runtime.cache_hits()
      programs[length] = parallel.compile_train_steps(
          update.make_train_steps(optimizer, plan), mesh, state, images, rows(0, length),
          compiler_options)
      seconds, cached = time.perf_counter() - began, runtime.cache_hits() > cache_hits
      run.log({'event': 'compile', 'step': step, 'steps_per_call': length,
               'seconds': round(seconds, 3), 'cached': cached})
      say(f'training step ({length} per call) '
          f'{"loaded from the compilation cache" if cached else "compiled"} in {seconds:.1f} s')
      bar.set_description('training')
    return programs[length]

  with tqdm(total=total_steps, initial=step, unit='step', dynamic_ncols=True,
            disable=not run.writer, desc='training') as bar:
    say(f'{where["backend"]}: {where["device_count"]} x {where["device_kind"]}, '
        f'{mesh.devices.size} in use, {where["process_count"]} process(es), '
        f'jax {where["versions"]["jax"]}')
    segment_losses, log_losses, seconds, timed_steps = [], [], 0.0, 0
    stopping = signals.agreed()
    while step < total_steps and not stopping:
      segment_end = min((step // eval_every + 1) * eval_every, total_steps)
      length = update.call_length(step, segment_end, plan.steps_per_call)
      train_steps = program(length)
      call_start = time.perf_counter()
      state, losses = train_steps(state, images, rows(step, length))
      losses = np.asarray(losses)  # waits for the device
      seconds += time.perf_counter() - call_start
      if timed_steps == 0:
        # From train()'s start: loading the data, restoring, compiling, the first call.
        run.log({'event': 'first_update', 'step': step + length,
                 'seconds': round(time.perf_counter() - started, 3)})
      timed_steps += length
      if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        kept = ('no checkpoint was written' if not run.checkpoint_steps() else
                f'the last good checkpoint (step {max(run.checkpoint_steps())}) in {run.path} '
                'is kept')
        raise TrainingDiverged(f'loss is {losses[bad]} at step {step + bad + 1}: training '
                               f'stopped; {kept}; try a lower --lr')
      for done, loss in enumerate(losses, start=step + 1):
        log_losses.append(loss)
        if done % rundir.TRAIN_LOG_EVERY == 0:
          run.log({'event': 'train', 'step': done, 'train_loss': float(np.mean(log_losses))})
          log_losses = []
      segment_losses.extend(losses)
      step += length
      images_per_s = timed_steps * config.batch_size / seconds
      bar.update(length)
      bar.set_postfix(loss=f'{losses[-1]:.4f}', img_s=f'{images_per_s:.0f}')
      stopping = signals.agreed()
      if step == segment_end or (stopping and step > saved_step):
        test_mse = float(np.mean(inference.image_errors(parallel.local_copy(state.params),
                                                        dataset.test.images)))
        # The record first: a kill between the two leaves a record past the last
        # checkpoint, which a resume drops, never a checkpoint missing from the log.
        run.log({'event': 'eval', 'step': step, 'epoch': round(step / steps_per_epoch, 3),
                 'train_loss': float(np.mean(segment_losses)), 'test_mse': test_mse,
                 'images_per_s': round(images_per_s, 1)})
        run.save(state, test_mse)
        saved_step = step
        say(f'step {step}: train loss {np.mean(segment_losses):.5f}, test MSE/pixel '
            f'{test_mse:.5f}, {images_per_s:.0f} images/s')
        segment_losses = []
  if stopping:
    signum = signals.received or signal.SIGTERM  # or another process's signal
    where = (f'its checkpoint is in {run.path}' if step == saved_step and step else
             'no checkpoint was written')
    raise Stopped(f'stopped by {signal.Signals(signum).name} at step {step}; {where}: '
                  f'continue with python train.py --workdir {run.path} --resume', signum)
  return state


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
                       f'{self.workdir} is usable: continue with python train.py --workdir '
                       f'{self.workdir} --resume\n')
      sys.stderr.flush()
      os._exit(128 + signum)  # no cleanup to wait for: the checkpoints are written atomically
    self.received = signum
    sys.stderr.write(f'\n{name}: stopping after the call in flight, with a checkpoint '
                     '(again to stop at once)\n')
