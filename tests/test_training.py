import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_ae import training
from jax_ae.model import init_params


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)


def test_loss_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), init_params(jax.random.key(0)))
    batch = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), jnp.float64)
    loss = jax.jit(training.mse_loss)
    grads = jax.grad(training.mse_loss)(params, batch)
    for seed in range(3):  # directional derivatives along random directions
      keys = jax.random.split(jax.random.key(seed + 10), len(jax.tree.leaves(params)))
      direction = jax.tree.unflatten(jax.tree.structure(params), [
          jax.random.normal(key, leaf.shape, jnp.float64)
          for key, leaf in zip(keys, jax.tree.leaves(params))])
      # Small enough that no ReLU or max-pool switches inside the step (1e-7 crosses kinks
      # along some directions), large enough for float64 round-off.
      eps = 1e-8
      plus = loss(jax.tree.map(lambda p, d: p + eps * d, params, direction), batch)
      minus = loss(jax.tree.map(lambda p, d: p - eps * d, params, direction), batch)
      numeric = (plus - minus) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in
                     zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


def test_loss_goes_down_on_a_fixed_batch(images):
  state = training.init_state(0, training.make_optimizer(1e-3, 1e-6))
  same_batch = np.tile(np.arange(8, dtype=np.int32), (4, 1))  # 4 steps on rows 0..7 a call
  losses = []
  for _ in range(10):
    state, four_losses = training.train_steps(state, jnp.asarray(images), same_batch, lr=1e-3,
                                              weight_decay=1e-6)
    losses.extend(np.asarray(four_losses))
  assert int(state.step) == 40
  assert losses[-1] < 0.5 * losses[0], losses


def test_optimizer_is_pytorch_adam_with_coupled_l2():
  lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
  optimizer = training.make_optimizer(lr, wd)
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=5).astype(np.float32)}
  opt_state = optimizer.init(params)
  expected, m, v = params['w'].astype(np.float64), 0.0, 0.0
  for t in range(1, 4):
    grad = rng.normal(size=5).astype(np.float32)
    updates, opt_state = optimizer.update({'w': grad}, opt_state, params)
    params = {'w': params['w'] + updates['w']}
    g = grad + wd * expected  # PyTorch Adam: weight decay joins the gradient first
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    expected = expected - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(params['w'], expected, rtol=1e-5, atol=1e-7)


def test_batch_schedule_visits_each_row_once_per_epoch():
  rows = training.batch_schedule(seed=3, num_examples=100, batch_size=8, first_step=0,
                                 num_steps=24)  # 12 full batches an epoch, 4 rows dropped
  assert rows.shape == (24, 8)
  for epoch in rows.reshape(2, 96):
    assert len(set(epoch.tolist())) == 96
  assert not np.array_equal(rows[:12], rows[12:])  # reshuffled each epoch


def test_batch_schedule_depends_on_seed_and_step_only():
  whole = training.batch_schedule(seed=1, num_examples=50, batch_size=5, first_step=0,
                                  num_steps=30)
  part = training.batch_schedule(seed=1, num_examples=50, batch_size=5, first_step=7,
                                 num_steps=13)
  np.testing.assert_array_equal(part, whole[7:20])
  other = training.batch_schedule(seed=2, num_examples=50, batch_size=5, first_step=0,
                                  num_steps=30)
  assert not np.array_equal(whole, other)


def test_steps_per_call_change_only_rounding(images):
  # On CPU a call's steps are unrolled and XLA fuses across them, so 6 steps in one call
  # and 3 + 3 agree to rounding, not bit for bit (a resume repeats the very same calls).
  optimizer = training.make_optimizer(1e-4, 1e-6)
  train_steps = functools.partial(training.train_steps, lr=1e-4, weight_decay=1e-6)
  rows = training.batch_schedule(0, len(images), 4, 0, 6)
  device_images = jnp.asarray(images)
  whole, whole_losses = train_steps(training.init_state(0, optimizer), device_images, rows)
  split, first_losses = train_steps(training.init_state(0, optimizer), device_images, rows[:3])
  split, last_losses = train_steps(split, device_images, rows[3:])
  np.testing.assert_allclose(np.concatenate([first_losses, last_losses]), whole_losses, rtol=1e-5)
  # Adam moves a weight by at most lr a step, however small its gradient: rounding can flip
  # the sign of a vanishing gradient, so the bound is 6 steps of lr.
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=6e-4)
  assert int(whole.step) == int(split.step) == 6

def test_accelerator_scan_matches_cpu_unrolled_steps(images):
  # GPUs and TPUs run a call's steps in a lax.scan: the same updates as CPU's unrolled steps.
  optimizer = training.make_optimizer(1e-4, 1e-6)
  rows = training.batch_schedule(0, len(images), 4, 0, 3)
  results = [training.train_steps(training.init_state(0, optimizer), jnp.asarray(images), rows,
                                  lr=1e-4, weight_decay=1e-6, unroll=unroll)
             for unroll in (True, False)]
  (unrolled, unrolled_losses), (scanned, scanned_losses) = results
  np.testing.assert_allclose(scanned_losses, unrolled_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(unrolled.params), jax.tree.leaves(scanned.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=3e-4)  # 3 steps of lr: see above
  assert int(scanned.step) == 3


def test_image_errors_are_per_image_mse(images):
  params = init_params(jax.random.key(0))
  errors = training.image_errors(params, images[:7])  # fewer than a padded batch
  recon = training.reconstruct(params, images[:7])
  expected = np.mean((recon - images[:7] / 255.0) ** 2, axis=(1, 2, 3))
  assert errors.shape == (7,)
  np.testing.assert_allclose(errors, expected, rtol=1e-5)
  assert training.encode(params, images[:7]).shape == (7, 576)
