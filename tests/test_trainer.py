"""The host loop: checkpoints, exact resume, and the errors a user can cause."""
import json

import jax
import numpy as np
import pytest

from idx_files import write_idx_dataset
from jax_ae import checkpoint, trainer, training
from jax_ae.config import Config


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('idx')
  write_idx_dataset(folder, n_train=40, n_test=12)
  return f'idx:{folder}'


def tiny_config(data, **overrides):
  return Config(data=data, **{'steps': 6, 'batch_size': 8, 'eval_every': 3,
                              'steps_per_dispatch': 2, **overrides})


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def full_run(tiny_data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('full')
  return workdir, trainer.train(tiny_config(tiny_data), workdir)


def test_run_writes_config_metrics_and_checkpoints(full_run, tiny_data):
  workdir, state = full_run
  assert int(state.step) == 6
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [3, 6]
  assert all(np.isfinite(r['test_mse']) and r['data'] == tiny_data for r in records)
  assert json.loads((workdir / 'config.json').read_text())['steps'] == 6
  manager = checkpoint.open_manager(workdir / 'checkpoints', read_only=True)
  assert manager.all_steps() == [3, 6]


def test_resume_ends_with_the_uninterrupted_params(full_run, tiny_data, tmp_path):
  _, uninterrupted = full_run
  trainer.train(tiny_config(tiny_data, steps=3), tmp_path)  # stops at the first checkpoint
  resumed = trainer.train(tiny_config(tiny_data), tmp_path, resume=True)
  assert_trees_equal(resumed, uninterrupted)


def test_restore_params_gives_the_best_checkpoint(full_run):
  workdir, _ = full_run
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  best = min(records, key=lambda r: r['test_mse'])['step']
  config, params, step = trainer.restore_params(workdir)
  assert step == best and config.steps == 6
  assert jax.tree.structure(params) == jax.tree.structure(training.init_state(
      0, training.make_optimizer(1e-4, 1e-6)).params)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path,
                                                                   monkeypatch):
  real_train_steps = training.train_steps

  def diverging_after_step_4(state, images, batch_indices, **hyper):
    first = int(state.step)
    state, losses = real_train_steps(state, images, batch_indices, **hyper)
    steps = first + 1 + np.arange(len(losses))
    return state, np.where(steps >= 5, np.nan, losses)

  monkeypatch.setattr(training, 'train_steps', diverging_after_step_4)
  with pytest.raises(trainer.NonFiniteLoss, match=r'nan at step 5: .*checkpoint \(step 3\)'):
    trainer.train(tiny_config(tiny_data), tmp_path)
  manager = checkpoint.open_manager(tmp_path / 'checkpoints', read_only=True)
  assert manager.all_steps() == [3]


def test_a_diverging_run_writes_no_checkpoint(tiny_data, tmp_path):
  with pytest.raises(trainer.NonFiniteLoss, match='no checkpoint was written'):
    trainer.train(tiny_config(tiny_data, lr=1e8), tmp_path)
  assert checkpoint.open_manager(tmp_path / 'checkpoints').all_steps() == []
