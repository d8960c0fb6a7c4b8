"""The run directory's checkpoints: retention, exact round trips, a full disk."""
import logging
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jax_ae import rundir, update
from jax_ae.config import Config


def state_at(step):
  state = update.init_state(0, update.make_optimizer(1e-4, 1e-6))
  return state._replace(step=jax.numpy.asarray(step, jax.numpy.int32))


def new_run(path):
  run = rundir.open_for_training(path, Config(data='mnist5k'), resume=False)
  run.write_config(Config(data='mnist5k'))
  return run


def test_keeps_the_latest_three_and_analyses_the_final_one(tmp_path):
  run = new_run(tmp_path)
  for step, test_mse in enumerate([0.5, 0.1, 0.3, 0.4, 0.35, 0.2], start=1):
    run.log({'event': 'eval', 'step': step, 'test_mse': test_mse})
    run.save(state_at(step), test_mse)
  assert run.checkpoint_steps() == [4, 5, 6]
  # Not step 2, the best by test MSE: that would be a choice made on the test split.
  assert rundir.open_for_reading(tmp_path).load_params()[1] == 6


def test_round_trip_is_exact(tmp_path):
  run = new_run(tmp_path)
  state = state_at(7)
  state = state._replace(params=jax.tree.map(lambda p: p + 0.5, state.params))
  run.save(state, 0.1)
  run.close()
  restored = rundir.open_for_training(tmp_path, Config(data='mnist5k'), resume=True)\
      .restore_latest(state_at(0))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  params, step = rundir.open_for_reading(tmp_path).load_params()
  assert step == 7
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_analysis_falls_back_from_an_unreadable_final_checkpoint(tmp_path, capsys):
  run = new_run(tmp_path)
  for step, test_mse in ((1, 0.2), (2, 0.1), (3, 0.3)):
    run.log({'event': 'eval', 'step': step, 'test_mse': test_mse})
    run.save(state_at(step), test_mse)
  for path in (tmp_path / 'checkpoints' / '3').rglob('*'):
    if path.is_file():
      path.unlink()
  assert rundir.open_for_reading(tmp_path).load_params()[1] == 2  # the one before
  assert 'the checkpoint of step 3' in capsys.readouterr().err
  assert (tmp_path / 'checkpoints' / '3').is_dir()  # never deleted
  with pytest.raises(rundir.CheckpointError, match='step 3 .* cannot be read'):
    rundir.open_for_reading(tmp_path).load_params(step=3)


def test_full_disk_keeps_the_previous_checkpoint(tmpfs, capsys, caplog, monkeypatch):
  unraisable = []
  monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
  small_disk = tmpfs('disk', 'size=60M')  # room for one checkpoint of this model (43 MB), not two
  run = new_run(small_disk / 'run')
  run.save(state_at(0), 0.5)
  with pytest.raises(rundir.CheckpointError, match='no space left on device.*step 0 is intact'):
    run.save(state_at(1), 0.4)
  # The one line says it all: none of Orbax's thread tracebacks, logged or unraisable.
  time.sleep(1)  # TensorStore's callbacks outlive the failed save
  assert 'Traceback' not in capsys.readouterr().err and not unraisable
  assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
  run.close()
  reopened = rundir.open_for_training(small_disk / 'run', Config(data='mnist5k'), resume=True)
  assert reopened.checkpoint_steps() == [0]
  assert int(reopened.restore_latest(state_at(5)).step) == 0
  reopened.close()  # its lock file is open on the mount


def test_a_bug_in_a_save_keeps_its_traceback(tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise KeyError('a bug somewhere')
  monkeypatch.setattr(ocp.CheckpointManager, 'save', broken)
  with pytest.raises(KeyError, match='a bug somewhere'):
    new_run(tmp_path).save(state_at(1), 0.1)


def test_a_checkpoint_of_non_finite_params_is_never_trusted(tmp_path, capsys):
  # Older versions checkpointed a model whose evaluation was NaN.
  run = new_run(tmp_path)
  run.save(state_at(1), 0.1)
  nan = state_at(2)
  run.save(nan._replace(params=jax.tree.map(lambda p: p * np.nan, nan.params)), float('nan'))
  run.close()
  assert rundir.open_for_reading(tmp_path).load_params()[1] == 1
  assert 'step 2' in capsys.readouterr().err
  resumed = rundir.open_for_training(tmp_path, Config(data='mnist5k'), resume=True)
  assert int(resumed.restore_latest(state_at(0)).step) == 1
  resumed.close()
  assert (tmp_path / 'damaged' / '2').is_dir()
