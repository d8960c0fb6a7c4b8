"""The host loop: one compiled program, exact resumes, the log and the checkpoints in step."""
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idx_files import write_idx_dataset
from jax_ae import loop, rundir, signals, update
from jax_ae.config import Config


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=40, n_test=12)  # 5 steps an epoch at batch 8
  return f'idx:{folder}'


def tiny_config(data, **overrides):
  return Config(data=data, **{'steps': 6, 'batch_size': 8, 'eval_every': 3,
                              'steps_per_dispatch': 2, **overrides})


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def records(workdir, event):
  return rundir.open_for_reading(workdir).records(event)


def copy_of(run, tmp_path):
  """A copy of a trained run's workdir, to damage or resume without training it again."""
  workdir, _ = run
  return shutil.copytree(workdir, tmp_path / 'run')


@pytest.fixture(scope='module')
def full_run(tiny_data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('full')
  return workdir, loop.train(tiny_config(tiny_data), workdir)


def test_run_writes_config_metrics_and_checkpoints(full_run, tiny_data):
  workdir, state = full_run
  assert int(state.step) == 6
  assert [r['step'] for r in records(workdir, 'eval')] == [3, 6]
  assert all(np.isfinite(r['test_mse']) for r in records(workdir, 'eval'))
  start, = records(workdir, 'start')
  assert start['backend'] == 'cpu' and start['steps_per_call'] == 2 and start['unrolled']
  assert start['versions']['jax'] == jax.__version__
  compiles = records(workdir, 'compile')  # segments of 3 steps: calls of 2, then 1
  assert [r['steps_per_call'] for r in compiles] == [2, 1] and compiles[0]['seconds'] > 0
  first_update, = records(workdir, 'first_update')
  assert first_update['step'] == 2 and first_update['seconds'] > compiles[0]['seconds']
  config = json.loads((workdir / 'config.json').read_text())
  assert config['steps'] == 6 and config['data'] == tiny_data
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [3, 6]


def test_resume_ends_with_the_uninterrupted_params(full_run, tiny_data, tmp_path):
  _, uninterrupted = full_run
  loop.train(tiny_config(tiny_data, steps=3), tmp_path)  # stops at the first checkpoint
  resumed = loop.train(tiny_config(tiny_data), tmp_path, resume=True)
  assert_trees_equal(resumed, uninterrupted)


def test_a_relative_workdir_resumes_and_restores(full_run, tiny_data, tmp_path, monkeypatch):
  _, uninterrupted = full_run
  monkeypatch.chdir(tmp_path)
  loop.train(tiny_config(tiny_data, steps=3), 'runs/relative')
  resumed = loop.train(tiny_config(tiny_data), 'runs/relative', resume=True)
  assert_trees_equal(resumed, uninterrupted)
  params, step = rundir.open_for_reading('runs/relative').load_params(step=6)
  assert_trees_equal(params, uninterrupted.params)


@pytest.mark.slow  # several trainings
def test_a_longer_run_continues_exactly_from_a_call_boundary(tiny_data, tmp_path, capsys):
  # 4 steps a call, evaluations every 5: calls of 4 and 1 steps. Step 4 ends a call of the
  # 10-step run, step 3 does not: resumed from there, the run warns that it is not exact.
  config = tiny_config(tiny_data, steps_per_dispatch=4, eval_every=5)
  uninterrupted = loop.train(dataclasses.replace(config, steps=10), tmp_path / 'whole')
  loop.train(dataclasses.replace(config, steps=4), tmp_path / 'four')
  resumed = loop.train(dataclasses.replace(config, steps=10), tmp_path / 'four', resume=True)
  assert_trees_equal(resumed, uninterrupted)
  assert 'warning' not in capsys.readouterr().out
  loop.train(dataclasses.replace(config, steps=3), tmp_path / 'three')
  loop.train(dataclasses.replace(config, steps=10), tmp_path / 'three', resume=True)
  assert 'step 3, where the run stopped, is inside a call' in capsys.readouterr().out


@pytest.fixture
def train_step_compilations():
  """How many times XLA compiled jit(train_steps), as JAX_LOG_COMPILES reports it."""
  messages = []

  class Collect(logging.Handler):
    def emit(self, record):
      if 'XLA compilation of jit(train_steps)' in record.getMessage():
        messages.append(record.getMessage())

  handler, logger = Collect(level=logging.WARNING), logging.getLogger('jax')
  logger.addHandler(handler)
  jax.config.update('jax_log_compiles', True)
  yield messages
  jax.config.update('jax_log_compiles', False)
  logger.removeHandler(handler)


@pytest.mark.slow  # several trainings
def test_the_scan_path_compiles_two_programs_per_run_and_resumes_exactly(
    tiny_data, tmp_path, train_step_compilations):
  # The accelerators' path, forced on CPU: 3 epochs of 5 steps at 4 steps a call (an epoch
  # is not a multiple of the call), evaluating each epoch, resumed in the middle.
  plan = update.StepPlan(steps_per_call=4, unroll=False)
  config = tiny_config(tiny_data, steps=None, epochs=3, eval_every=None, steps_per_dispatch=4)
  uninterrupted = loop.train(config, tmp_path / 'whole', plan=plan)
  assert len(train_step_compilations) == 2, train_step_compilations  # 4 steps, and 1
  loop.train(dataclasses.replace(config, steps=9), tmp_path / 'split', plan=plan)
  assert len(train_step_compilations) == 4
  resumed = loop.train(config, tmp_path / 'split', resume=True, plan=plan)
  assert len(train_step_compilations) == 6
  assert int(resumed.step) == 15
  assert_trees_equal(resumed, uninterrupted)
  compiles = records(tmp_path / 'whole', 'compile')
  assert [r['steps_per_call'] for r in compiles] == [4, 1]


def make_diverging_after_step_4(real_make_train_steps):
  def make_train_steps(optimizer, plan):
    real = real_make_train_steps(optimizer, plan)

    def train_steps(state, images, batch_indices):
      steps = state.step + 1 + jnp.arange(len(batch_indices))
      state, losses = real(state, images, batch_indices)
      return state, jnp.where(steps >= 5, jnp.nan, losses)
    return train_steps
  return make_train_steps


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path,
                                                                   monkeypatch):
  monkeypatch.setattr(update, 'make_train_steps',
                      make_diverging_after_step_4(update.make_train_steps))
  with pytest.raises(loop.TrainingDiverged, match=r'nan at step 5: .*checkpoint \(step 3\)'):
    loop.train(tiny_config(tiny_data), tmp_path)
  assert rundir.open_for_reading(tmp_path).checkpoint_steps() == [3]


def test_a_diverging_run_writes_no_checkpoint(tiny_data, tmp_path):
  with pytest.raises(loop.TrainingDiverged, match='no checkpoint was written'):
    loop.train(tiny_config(tiny_data, lr=1e8), tmp_path)
  assert rundir.open_for_reading(tmp_path).checkpoint_steps() == []


@pytest.mark.slow  # several trainings
def test_log_past_the_last_checkpoint_is_dropped_on_resume(tiny_data, tmp_path):
  # A kill after the records of step 12 were logged, before its checkpoint was complete,
  # and another in the middle of writing a line.
  config = tiny_config(tiny_data, steps=12, eval_every=6)
  uninterrupted = loop.train(config, tmp_path / 'whole')
  workdir = tmp_path / 'run'
  loop.train(config, workdir)
  shutil.rmtree(workdir / 'checkpoints' / '12')
  with open(workdir / 'metrics.jsonl', 'a') as log:
    log.write('{"event": "train", "st')
  resumed = loop.train(config, workdir, resume=True)
  assert_trees_equal(resumed, uninterrupted)
  assert [r['step'] for r in records(workdir, 'eval')] == [6, 12]
  assert [r['step'] for r in records(workdir, 'train')] == [10]
  assert [r['step'] for r in records(workdir, 'start')] == [0, 6]
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == len(records(workdir, None))  # the torn line is gone
  # Every checkpoint's step has its record.
  assert set(rundir.open_for_reading(workdir).checkpoint_steps()) <= {6, 12}


def remove_files(folder):
  for path in folder.rglob('*'):
    if path.is_file():
      path.unlink()


def truncate_files(folder):
  for path in folder.rglob('*'):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def replace_with_garbage(folder):
  shutil.rmtree(folder)
  folder.mkdir()
  (folder / 'params').write_bytes(np.random.default_rng(0).bytes(1000))


def damage_metrics_item(folder):
  # An item of older jax-ae checkpoints, which Orbax reads when it opens the folder.
  (folder / 'metrics').mkdir()
  (folder / 'metrics' / 'metrics').write_text('{"test_ms')


def damage_checkpoint_metadata(folder):
  (folder / '_CHECKPOINT_METADATA').write_text('{"item_handlers": {')


@pytest.mark.parametrize('damage', [remove_files, truncate_files, replace_with_garbage,
                                    damage_metrics_item, damage_checkpoint_metadata])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(full_run, tiny_data, tmp_path,
                                                                capsys, damage):
  _, uninterrupted = full_run
  workdir = copy_of(full_run, tmp_path)
  damage(workdir / 'checkpoints' / '6')
  capsys.readouterr()
  resumed = loop.train(tiny_config(tiny_data), workdir, resume=True)
  warnings = [line for line in capsys.readouterr().err.splitlines() if 'warning' in line]
  assert any('the checkpoint of step 6' in line and 'cannot be read' in line
             for line in warnings), warnings
  assert (workdir / 'damaged' / '6').is_dir()  # set aside, never deleted
  assert_trees_equal(resumed, uninterrupted)
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [3, 6]


def test_no_readable_checkpoint_is_one_error(full_run, tiny_data, tmp_path):
  workdir = copy_of(full_run, tmp_path)
  for step in (3, 6):
    remove_files(workdir / 'checkpoints' / str(step))
  with pytest.raises(rundir.CheckpointError, match=r'no checkpoint .* can be read \(steps 6, 3\)'):
    loop.train(tiny_config(tiny_data), workdir, resume=True)
  assert (workdir / 'checkpoints' / '6').is_dir()


def test_a_workdir_in_use_is_refused_and_a_dead_holders_lock_is_not(tiny_data, tmp_path):
  (tmp_path / 'run').mkdir()
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, os, sys, time\n'
       'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n'
       'fcntl.flock(fd, fcntl.LOCK_EX)\nprint("locked", flush=True)\ntime.sleep(120)',
       str(tmp_path / 'run' / '.lock')], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(rundir.RunDirError, match='another train.py is training in'):
      loop.train(tiny_config(tiny_data, steps=2), tmp_path / 'run')
    assert not (tmp_path / 'run' / 'config.json').exists()
  finally:
    holder.kill()
    holder.wait()
  assert int(loop.train(tiny_config(tiny_data, steps=2), tmp_path / 'run').step) == 2


def test_a_signal_during_a_checkpoint_stops_after_it(tiny_data, tmp_path, monkeypatch):
  real_save = rundir.Run.save

  def save_and_get_a_signal(run, state, test_mse):
    real_save(run, state, test_mse)
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the checkpoint is being written

  monkeypatch.setattr(rundir.Run, 'save', save_and_get_a_signal)
  workdir = tmp_path / "a run's folder"  # the printed command quotes it
  with pytest.raises(signals.Stopped) as stopped:
    loop.train(tiny_config(tiny_data, steps=12), workdir)
  assert 'at step 3; its checkpoint is in' in str(stopped.value)
  assert shlex.split(str(stopped.value).split('continue with ')[1]) == [
      'python', 'train.py', '--workdir', str(workdir), '--resume']
  assert rundir.open_for_reading(workdir).checkpoint_steps() == [3]
