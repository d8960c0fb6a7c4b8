"""The host loop: the data to the device, the training step compiled once per call length
(two programs at most), evaluations, checkpoints, the log, and stopping cleanly on SIGINT or
SIGTERM.

A run reads as schedule -> call -> check -> evaluate and checkpoint: call_schedule says which
calls a run makes, dispatch.Dispatch makes them, _check_finite stops a diverged run, and
_evaluate_and_save writes the test MSE and the checkpoint at each segment's end.
"""
import dataclasses
import shlex
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jax_ae import data, dispatch, inference, parallel, rundir, runtime, update
from jax_ae.errors import ConfigError, UserError
from jax_ae.signals import StopSignals


class TrainingDiverged(UserError):
  """A NaN or infinite loss; the last good checkpoint is kept."""


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
    plan = plan or _plan_steps(mesh.devices.flat[0].platform, config,
                               workdir if resume else None)
    # Record what was resolved ('mnist' may fall back to 'mnist5k'; an idx: folder made
    # absolute; the steps per call depend on the backend), so that analyze.py and a resume
    # use the same.
    config = dataclasses.replace(config, data=rundir.resolved_data(dataset.name),
                                 steps_per_dispatch=plan.steps_per_call)
    run = rundir.open_for_training(workdir, config, resume, writer=jax.process_index() == 0,
                                   num_train=num_train)
    try:
      return _train(config, dataset, mesh, plan, run, signals, started)
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


def _train(config, dataset, mesh, plan, run, signals, started):
  num_train = len(dataset.train.images)
  total_steps = config.total_steps(dataset.name, num_train)
  eval_every = config.eval_interval(num_train)
  state, _, calls = dispatch.build(config, mesh, plan, dataset.train.images)
  state = run.restore_latest(state)
  step = saved_step = int(state.step)
  if _nothing_to_train(run, step, total_steps):
    return state
  _start(run, config, mesh, plan, step, num_train,
         starts_a_call(step, total_steps, eval_every, plan.steps_per_call))
  peers = parallel.PeerWatch(lambda: (
      f'the last complete checkpoint (step {max(run.checkpoint_steps(), default=0)}) in '
      f'{run.path} is usable: start every process again with --resume '
      f'(--workdir {shlex.quote(str(run.path))})'))
  with _Progress(run, config.batch_size, step, total_steps, started) as progress:
    stopping = _agreed(signals, peers)
    for first, length, ends_segment in call_schedule(step, total_steps, eval_every,
                                                     plan.steps_per_call):
      if stopping:
        break
      if length not in calls.programs:
        progress.compile(calls, state, first, length)
      began = time.perf_counter()
      with peers.waiting(f'the call of steps {first + 1}..{first + length}'):
        state, losses = calls(state, first, length)
        losses = np.asarray(losses)  # waits for the device
      _check_finite(losses, first, run)
      progress.called(first, losses, time.perf_counter() - began)
      step = first + length
      stopping = _agreed(signals, peers)
      if ends_segment or (stopping and step > saved_step):
        _evaluate_and_save(state, step, dataset.test.images, run, peers, progress)
        saved_step = step
        # A signal that came during the save stops here, not a call later.
        stopping = stopping or _agreed(signals, peers)
  if stopping:
    raise signals.stopped(step, f'its checkpoint is in {run.path}' if step == saved_step and step
                          else 'no checkpoint was written')
  return state


def call_schedule(step, total_steps, eval_every, steps_per_call):
  """The calls a run makes from `step` on: (first step, length, whether it ends a segment).

  A segment runs to the next evaluation (every eval_every steps, and at total_steps); its
  calls are update.call_length's. The loop makes these calls, and a resume checks its step
  against them (starts_a_call).
  """
  while step < total_steps:
    segment_end = min((step // eval_every + 1) * eval_every, total_steps)
    length = update.call_length(step, segment_end, steps_per_call)
    yield step, length, step + length == segment_end
    step += length


def starts_a_call(step, total_steps, eval_every, steps_per_call):
  """Whether an uninterrupted run with these settings starts a call at `step`."""
  firsts = (first for first, _, _ in call_schedule(step - step % eval_every, total_steps,
                                                    eval_every, steps_per_call))
  return next((first for first in firsts if first >= step), total_steps) == step


def _nothing_to_train(run, step, total_steps):
  if step > total_steps:
    raise ConfigError(f'the run in {run.path} is at step {step}, past the {total_steps} steps '
                      'asked for: ask for more with --steps or --epochs, or analyse it as it is')
  if step == total_steps and step:
    _say(run, f'the run in {run.path} has already done its {step} steps: nothing to train; '
         'ask for more with --steps or --epochs')
    return True
  return False


def _start(run, config, mesh, plan, step, num_train, at_call_boundary):
  """Writes the config and the 'start' record; says where it runs."""
  run.write_config(config)
  where = runtime.describe()
  run.log({'event': 'start', 'step': step, 'devices_used': mesh.devices.size,
           'steps_per_call': plan.steps_per_call, 'unrolled': plan.unroll,
           'steps_per_epoch': config.steps_per_epoch(num_train), **where})
  if run.exact and not at_call_boundary:
    _say(run, f'warning: step {step}, where the run stopped, is inside a call of this run\'s '
         'schedule (its length changed): it will end within rounding of an uninterrupted run, '
         'not bit for bit')
  _say(run, f'{where["backend"]}: {where["device_count"]} x {where["device_kind"]}, '
       f'{mesh.devices.size} in use, {where["process_count"]} process(es), '
       f'jax {where["versions"]["jax"]}')


def _agreed(signals, peers):
  with peers.waiting('agreeing whether to stop'):
    return signals.agreed()


def _check_finite(values, step, run, what='loss'):
  """Raises TrainingDiverged if any of the values of steps step + 1, ... is not finite."""
  if not np.all(np.isfinite(values)):
    bad = int(np.argmin(np.isfinite(values)))
    kept = ('no checkpoint was written' if not run.checkpoint_steps() else
            f'the last good checkpoint (step {max(run.checkpoint_steps())}) in {run.path} is kept')
    raise TrainingDiverged(f'{what} is {values[bad]} at step {step + bad + 1}: training stopped; '
                           f'{kept}; try a lower --lr')


def _evaluate_and_save(state, step, test_images, run, peers, progress):
  test_mse = float(np.mean(inference.image_errors(parallel.local_copy(state.params),
                                                  test_images)))
  # A checkpoint is written only for a finite evaluation: a resume, analyze.py and the
  # divergence message all take every checkpoint for a good model.
  _check_finite([test_mse], step - 1, run, 'the test MSE')
  # The record first: a kill between the two leaves a record past the last checkpoint,
  # which a resume drops, never a checkpoint missing from the log.
  progress.evaluated(step, test_mse)
  with peers.waiting(f'the checkpoint of step {step}'):
    run.save(state, test_mse)


def _say(run, line):
  if run.writer:
    tqdm.write(line)


class _Progress:
  """What a run shows and logs as it goes, from its writing process: the bar, the lines, and
  the 'compile', 'first_update', 'train' and 'eval' records."""

  def __init__(self, run, batch_size, step, total_steps, started):
    self.run, self.batch_size, self.started = run, batch_size, started
    self.bar = tqdm(total=total_steps, initial=step, unit='step', dynamic_ncols=True,
                    disable=not run.writer, desc='training')
    self.segment_losses, self.log_losses = [], []  # since the last evaluation, 'train' record
    self.call_seconds, self.timed_steps = 0.0, 0

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.bar.close()

  def compile(self, calls, state, step, length):
    self.bar.set_description('compiling')
    seconds, cached = calls.compile(state, length)
    self.run.log({'event': 'compile', 'step': step, 'steps_per_call': length,
                  'seconds': round(seconds, 3), 'cached': cached})
    _say(self.run, f'training step ({length} per call) '
         f'{"loaded from the compilation cache" if cached else "compiled"} in {seconds:.1f} s')
    self.bar.set_description('training')

  @property
  def images_per_s(self):
    return self.timed_steps * self.batch_size / self.call_seconds

  def called(self, first, losses, seconds):
    """The losses of steps first + 1, ..., which took `seconds`."""
    self.call_seconds += seconds
    if self.timed_steps == 0:
      # From train()'s start: loading the data, restoring, compiling, the first call.
      self.run.log({'event': 'first_update', 'step': first + len(losses),
                    'seconds': round(time.perf_counter() - self.started, 3)})
    self.timed_steps += len(losses)
    for done, loss in enumerate(losses, start=first + 1):
      self.log_losses.append(loss)
      if done % rundir.TRAIN_LOG_EVERY == 0:
        self.run.log({'event': 'train', 'step': done,
                      'train_loss': float(np.mean(self.log_losses))})
        self.log_losses = []
    self.segment_losses.extend(losses)
    self.bar.update(len(losses))
    self.bar.set_postfix(loss=f'{losses[-1]:.4f}', img_s=f'{self.images_per_s:.0f}')

  def evaluated(self, step, test_mse):
    train_loss = float(np.mean(self.segment_losses))
    self.run.log({'event': 'eval', 'step': step, 'train_loss': train_loss,
                  'test_mse': test_mse, 'images_per_s': round(self.images_per_s, 1)})
    _say(self.run, f'step {step}: train loss {train_loss:.5f}, test MSE/pixel {test_mse:.5f}, '
         f'{self.images_per_s:.0f} images/s')
    self.segment_losses = []
