"""Two real train.py processes joined by JAX's distributed runtime on 127.0.0.1, 2 fake CPU
devices each (a mesh of 4), gloo collectives: as the README tells users to run them."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from idx_files import write_idx, write_idx_dataset
from jax_ae import rundir

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20  # 8 steps an epoch: evaluations at 8, 16 and 20, calls of 4 steps


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=64, n_test=60)
  # Every class in both splits 6 times or more: enough for analyze.py's cross-validation.
  for name, count in (('train', 64), ('t10k', 60)):
    write_idx(folder / f'{name}-labels-idx1-ubyte', (np.arange(count) % 10).astype(np.uint8))
  return f'idx:{folder}'


# Jobs of two real train.py processes, and single-process runs to compare them with.
pytestmark = pytest.mark.slow
PEER_TIMEOUT = 30  # seconds: a process's wait for the other, far above a compile or a save


@pytest.fixture(scope='module')
def cache():
  return os.environ['JAX_AE_COMPILATION_CACHE']  # the tests' own (conftest.py)


def environment(cache, devices, **extra):
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
         'JAX_PLATFORMS': 'cpu', 'JAX_AE_COMPILATION_CACHE': str(cache),
         'JAX_AE_PEER_TIMEOUT': str(PEER_TIMEOUT), 'PYTHONUNBUFFERED': '1', **extra}
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    env.setdefault(name, '')
  return env


def command(workdir, *flags):
  return [sys.executable, str(ROOT / 'train.py'), '--workdir', str(workdir), *map(str, flags)]


def start_job(workdir, cache, *flags, peer_timeout=PEER_TIMEOUT):
  """Two processes of one job, as the README's commands start them."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  return [subprocess.Popen(command(workdir, *flags), env=environment(
      cache, 2, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(index), JAX_AE_PEER_TIMEOUT=str(peer_timeout)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]


def finish(processes, timeout=300):
  try:
    return [process.communicate(timeout=timeout) for process in processes]
  finally:
    for process in processes:
      process.kill()


def wait_for(condition, processes, timeout=240):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
    time.sleep(0.1)


def train_flags(data, steps=STEPS):
  return ['--data', data, '--steps', steps, '--batch-size', 8]


def params_of(workdir, step):
  return rundir.open_for_reading(workdir).load_params(step=step)[0]


def differences(a, b):
  return np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel()
                         for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)])


def assert_params_close(a, b, steps=STEPS, lr=1e-4):
  # The all-reduce sums in another order. Adam moves a weight by up to lr a step however
  # small its gradient, so where rounding flips the sign of a vanishing gradient two runs
  # part by up to lr a step; elsewhere they agree to float32 rounding.
  gaps = differences(a, b)
  assert gaps.max() <= steps * lr and np.mean(gaps > 1e-6) < 1e-3, (gaps.max(),
                                                                    np.mean(gaps > 1e-6))


@pytest.fixture(scope='module')
def two_process_run(data, cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('two')
  processes = start_job(workdir, cache, *train_flags(data))
  outputs = finish(processes)
  for process, (_, err) in zip(processes, outputs):
    assert process.returncode == 0, err[-3000:]
  return workdir, outputs


def test_two_processes_train_like_one_process_on_four_devices_and_on_one(
    two_process_run, data, cache, tmp_path):
  workdir, _ = two_process_run
  for name, devices, flags in (('four', 4, ['--devices', 4]), ('one', 1, [])):
    single = subprocess.run(command(tmp_path / name, *train_flags(data), *flags),
                            env=environment(cache, devices), capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert_params_close(params_of(tmp_path / name, STEPS), params_of(workdir, STEPS))
  test_mse = {name: rundir.open_for_reading(path).records('eval')[-1]['test_mse']
              for name, path in (('two', workdir), ('four', tmp_path / 'four'))}
  assert test_mse['two'] == pytest.approx(test_mse['four'], rel=1e-6)
  start, = rundir.open_for_reading(workdir).records('start')
  assert start['process_count'] == 2 and start['devices_used'] == 4


def test_only_process_0_writes_and_prints(two_process_run):
  workdir, ((first_out, first_err), (second_out, second_err)) = two_process_run
  steps = [r['step'] for r in rundir.open_for_reading(workdir).records('eval')]
  assert steps == [8, 16, 20]  # one writer: no record twice
  assert 'step 20: train loss' in first_out and 'training:' in first_err
  assert 'step 20' not in second_out + second_err and 'training:' not in second_err
  assert json.loads((workdir / 'config.json').read_text())['devices'] == 'auto'


def test_the_checkpoint_restores_in_one_process_on_one_device(two_process_run, tmp_path):
  workdir, _ = two_process_run
  params, step = rundir.open_for_reading(workdir).load_params()
  assert len(params['decoder']['fc2']['kernel'].devices()) == 1
  analysis = subprocess.run([sys.executable, str(ROOT / 'analyze.py'), '--workdir',
                             str(workdir), '--out', str(tmp_path / 'analysis')],
                            capture_output=True, text=True, timeout=300)
  assert analysis.returncode == 0, analysis.stderr[-3000:]
  assert (tmp_path / 'analysis' / 'metrics.json').exists()


def test_both_killed_then_both_resumed_end_like_the_uninterrupted_job(
    two_process_run, data, cache, tmp_path):
  uninterrupted, _ = two_process_run
  processes = start_job(tmp_path, cache, *train_flags(data))
  wait_for(lambda: 8 in rundir.open_for_reading(tmp_path).checkpoint_steps()
           if (tmp_path / 'config.json').exists() else False, processes)
  for process in processes:
    process.send_signal(signal.SIGKILL)
  finish(processes)
  resumed = start_job(tmp_path, cache, '--resume')
  for process, (_, err) in zip(resumed, finish(resumed)):
    assert process.returncode == 0, err[-3000:]
  assert differences(params_of(tmp_path, STEPS), params_of(uninterrupted, STEPS)).max() == 0


@pytest.mark.parametrize('dying', [1, 0])
def test_when_one_process_dies_the_other_ends_in_bounded_time(data, cache, tmp_path, dying):
  # A shorter peer timeout: the survivor may wait it out in a collective that hangs (10 s
  # was too short for a loaded machine's start, where one process compiles while the other
  # waits).
  processes = start_job(tmp_path, cache, *train_flags(data, steps=2000), peer_timeout=20)
  wait_for(lambda: (tmp_path / 'config.json').exists() and any(
      r['step'] > 8 for r in rundir.open_for_reading(tmp_path).records('train')), processes)
  processes[dying].send_signal(signal.SIGKILL)
  survivor = processes[1 - dying]
  started = time.monotonic()
  _, err = survivor.communicate(timeout=120)
  assert survivor.returncode != 0 and time.monotonic() - started < 80
  last = err.strip().splitlines()[-1]
  own_line = (last.startswith(f'error: process {1 - dying} ')
              and 'another process has probably stopped' in last
              and 'start every process again with --resume' in last)
  if dying == 1:  # jax-ae's own line
    assert own_line, last
  else:  # the coordinator is gone: JAX itself ends the job's processes at once, unless the
    # survivor's collective fails first (seen on a loaded machine): then jax-ae's own line
    assert 'another task died' in err or own_line, err[-2000:]
  finish(processes)
  params, step = rundir.open_for_reading(tmp_path).load_params()  # still usable
  assert step >= 8
