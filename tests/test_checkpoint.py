import subprocess

import jax
import numpy as np
import pytest

from jax_ae import checkpoint, training


def state_at(step):
  state = training.init_state(0, training.make_optimizer(1e-4, 1e-6))
  return state._replace(step=jax.numpy.asarray(step, jax.numpy.int32))


def test_keeps_the_latest_three_and_the_best(tmp_path):
  manager = checkpoint.open_manager(tmp_path)
  for step, test_mse in enumerate([0.5, 0.1, 0.3, 0.4, 0.35, 0.2], start=1):
    checkpoint.save(manager, state_at(step), test_mse)
  assert manager.all_steps() == [2, 4, 5, 6]
  assert manager.best_step() == 2 and manager.latest_step() == 6


def test_round_trip_is_exact(tmp_path):
  manager = checkpoint.open_manager(tmp_path)
  state = state_at(7)
  state = state._replace(params=jax.tree.map(lambda p: p + 0.5, state.params))
  checkpoint.save(manager, state, 0.1)
  restored = checkpoint.restore(checkpoint.open_manager(tmp_path, read_only=True), 7, state_at(0))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


@pytest.fixture
def small_disk(tmp_path):
  """A 60 MB filesystem: room for one checkpoint of this model (43 MB), not two."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=60M', 'tmpfs', str(mount)],
                    capture_output=True).returncode:
    pytest.skip('needs permission to mount a tmpfs')
  yield mount
  subprocess.run(['umount', str(mount)], check=True)


def test_full_disk_keeps_the_previous_checkpoint(small_disk):
  manager = checkpoint.open_manager(small_disk / 'checkpoints')
  checkpoint.save(manager, state_at(0), 0.5)
  with pytest.raises(checkpoint.CheckpointError, match='no space left on device.*step 0 is intact'):
    checkpoint.save(manager, state_at(1), 0.4)
  reopened = checkpoint.open_manager(small_disk / 'checkpoints')
  assert reopened.latest_step() == 0
  restored = checkpoint.restore(reopened, 0, state_at(5))
  assert int(restored.step) == 0
