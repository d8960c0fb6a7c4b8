"""A real train.py interrupted as a user, a scheduler or a crash would: SIGINT (Ctrl-C),
SIGTERM (preemption), a second Ctrl-C, kill -9 mid-checkpoint; then --resume."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from idx_files import write_idx_dataset
from jax_ae import loop, rundir
from jax_ae.config import Config

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, EVAL_EVERY = 120, 8, 50  # 5 steps an epoch; calls of 4 steps, then single


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=40, n_test=8)
  return f'idx:{folder}'


@pytest.fixture(scope='module')
def uninterrupted(data, tmp_path_factory):
  config = Config(data=data, steps=STEPS, batch_size=BATCH, eval_every=EVAL_EVERY)
  return loop.train(config, tmp_path_factory.mktemp('whole')).params


# Real train.py processes, each started, interrupted and resumed.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def environment():
  # The processes share the tests' compilation cache (conftest.py): none compiles again what
  # the in-process run compiled.
  return {**os.environ, 'PYTHONUNBUFFERED': '1'}


def train_py(workdir, environment, *flags):
  return [sys.executable, str(ROOT / 'train.py'), '--workdir', str(workdir), *flags]


def start(data, workdir, environment):
  flags = ['--data', data, '--steps', STEPS, '--batch-size', BATCH, '--eval-every', EVAL_EVERY]
  return subprocess.Popen(train_py(workdir, environment, *map(str, flags)), env=environment,
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def wait_for_training(process, workdir, after_step):
  """Waits until the run has logged training past after_step."""
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and process.poll() is None:
    if (workdir / 'config.json').exists() and any(
        r['step'] > after_step for r in rundir.open_for_reading(workdir).records('train')):
      return
    time.sleep(0.05)
  raise AssertionError(f'the run did not train past step {after_step}: '
                       f'{process.stderr.read() if process.poll() is not None else "hung"}')


def resume(workdir, environment):
  return subprocess.run(train_py(workdir, environment, '--resume'), env=environment,
                        capture_output=True, text=True, timeout=300)


def assert_finishes_like_the_uninterrupted_run(workdir, environment, uninterrupted):
  finished = resume(workdir, environment)
  assert finished.returncode == 0, finished.stderr[-2000:]
  params, step = rundir.open_for_reading(workdir).load_params(step=STEPS)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(uninterrupted), strict=True):
    np.testing.assert_array_equal(a, b)


def assert_stopped_cleanly(process, signum):
  """Exit code 128 + signum, no traceback, the last line says how to resume; the step."""
  _, err = process.communicate(timeout=120)
  assert process.returncode == 128 + signum, err[-2000:]
  assert 'Traceback' not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert f'stopped by {signal.Signals(signum).name} at step' in last and '--resume' in last, last
  return int(last.split(' at step ')[1].split(';')[0])


def test_sigint_then_sigterm_each_checkpoint_their_step_and_resume_exactly(
    data, tmp_path, environment, uninterrupted):
  workdir = tmp_path / 'run'
  process = start(data, workdir, environment)
  wait_for_training(process, workdir, after_step=10)
  # Paused while a second train.py is refused (the lock is still held), so that the signal
  # after it lands inside a segment, not at its end.
  process.send_signal(signal.SIGSTOP)
  second = subprocess.run(train_py(workdir, environment, '--resume'), env=environment,
                          capture_output=True, text=True, timeout=120)
  process.send_signal(signal.SIGCONT)
  assert second.returncode == 2 and 'another train.py is training in' in second.stderr
  process.send_signal(signal.SIGINT)
  stopped_at = assert_stopped_cleanly(process, signal.SIGINT)
  assert stopped_at % EVAL_EVERY and stopped_at in rundir.open_for_reading(workdir).checkpoint_steps()

  process = subprocess.Popen(train_py(workdir, environment, '--resume'), env=environment,
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  wait_for_training(process, workdir, after_step=stopped_at + 10)
  process.send_signal(signal.SIGTERM)
  stopped_at = assert_stopped_cleanly(process, signal.SIGTERM)
  assert stopped_at in rundir.open_for_reading(workdir).checkpoint_steps()
  assert_finishes_like_the_uninterrupted_run(workdir, environment, uninterrupted)


def test_a_second_ctrl_c_stops_at_once_and_the_last_checkpoint_resumes(
    data, tmp_path, environment, uninterrupted):
  workdir = tmp_path / 'run'
  process = start(data, workdir, environment)
  wait_for_training(process, workdir, after_step=EVAL_EVERY)  # a checkpoint at 50
  process.send_signal(signal.SIGINT)
  while 'stopping after the call in flight' not in process.stderr.readline():
    pass
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=60)
  assert process.returncode == 130 and 'Traceback' not in err, err[-3000:]
  assert 'SIGINT again: stopped at once' in err
  assert_finishes_like_the_uninterrupted_run(workdir, environment, uninterrupted)


def test_kill_9_mid_checkpoint_then_resume(data, tmp_path, environment):
  workdir = tmp_path / 'run'
  flags = ['--data', data, '--steps', 30, '--batch-size', BATCH, '--eval-every', 2]
  uninterrupted = loop.train(Config(data=data, steps=30, batch_size=BATCH, eval_every=2),
                             tmp_path / 'whole')
  process = subprocess.Popen(train_py(workdir, environment, *map(str, flags)), env=environment,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = workdir / 'checkpoints'
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and process.poll() is None:
    saving = [p for p in checkpoints.glob('*') if 'tmp' in p.name]
    done = [p for p in checkpoints.glob('*') if p.name.isdigit()]
    if done and saving:  # a save in progress after at least one complete one
      break
    time.sleep(0.005)
  assert process.poll() is None, 'the run ended before it could be killed'
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 0 < max(rundir.open_for_reading(workdir).checkpoint_steps()) < 30
  finished = resume(workdir, environment)  # the dead process's lock does not block it
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert not [p for p in checkpoints.glob('*') if 'tmp' in p.name]
  params, _ = rundir.open_for_reading(workdir).load_params(step=30)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(uninterrupted.params), strict=True):
    np.testing.assert_array_equal(a, b)
