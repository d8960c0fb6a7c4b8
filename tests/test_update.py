import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_ae import data, update
from jax_ae.config import ConfigError
from jax_ae.model import init_params

pytestmark = pytest.mark.usefixtures('float32_matmuls')


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.integers(0, 256, size=(16, 784), dtype=np.uint8))  # as on the device


def compiled_steps(steps_per_call, unroll, lr=1e-4, weight_decay=1e-6):
  """(jitted train_steps, a fresh state) for a plan, as the loop builds them."""
  optimizer = update.make_optimizer(lr, weight_decay)
  plan = update.StepPlan(steps_per_call, unroll)
  return jax.jit(update.make_train_steps(optimizer, plan)), update.init_state(0, optimizer)


def schedule(first, num_steps, batch_size=4):
  return update.batch_schedule(0, 16, batch_size, first, num_steps)


def test_loss_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), init_params(jax.random.key(0)))
    batch = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), jnp.float64)
    loss = jax.jit(update.mse_loss)
    grads = jax.grad(update.mse_loss)(params, batch)
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


def test_loss_goes_down_on_a_fixed_batch():
  # Real digits: uniform noise cannot be reconstructed much below its variance (1/12) until
  # the network memorizes it.
  digits = data.load_dataset('mnist5k').train.images[:16].reshape(16, -1)
  images = jnp.asarray(digits)
  train_steps, state = compiled_steps(4, unroll=True, lr=1e-3)
  same_batch = np.tile(np.arange(8, dtype=np.int32), (4, 1))  # 4 steps on rows 0..7 a call
  losses = []
  for _ in range(10):
    state, four_losses = train_steps(state, images, same_batch)
    losses.extend(np.asarray(four_losses))
  assert int(state.step) == 40
  assert losses[-1] < 0.5 * losses[0], losses


def test_optimizer_is_pytorch_adam_with_coupled_l2():
  lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
  optimizer = update.make_optimizer(lr, wd)
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
  rows = update.batch_schedule(seed=3, num_examples=100, batch_size=8, first_step=0,
                               num_steps=24)  # 12 full batches an epoch, 4 rows dropped
  assert rows.shape == (24, 8)
  for epoch in rows.reshape(2, 96):
    assert len(set(epoch.tolist())) == 96
  assert not np.array_equal(rows[:12], rows[12:])  # reshuffled each epoch


def test_batch_schedule_depends_on_seed_and_step_only():
  whole = update.batch_schedule(seed=1, num_examples=50, batch_size=5, first_step=0,
                                num_steps=30)
  part = update.batch_schedule(seed=1, num_examples=50, batch_size=5, first_step=7,
                               num_steps=13)
  np.testing.assert_array_equal(part, whole[7:20])
  other = update.batch_schedule(seed=2, num_examples=50, batch_size=5, first_step=0,
                                num_steps=30)
  assert not np.array_equal(whole, other)


def test_calls_run_k_steps_while_k_fit_then_single_steps():
  lengths, step = [], 0
  while step < 11:
    lengths.append(update.call_length(step, 11, 4))
    step += lengths[-1]
  assert lengths == [4, 4, 1, 1, 1]


def test_a_call_of_k_steps_is_k_single_steps_up_to_rounding(images):
  # On CPU a call's steps are unrolled and XLA fuses across them: the same updates,
  # rounded differently (so a resume must repeat the very calls of the run it continues).
  whole_steps, state = compiled_steps(4, unroll=True)
  whole, whole_losses = whole_steps(state, images, schedule(0, 4))
  single_steps, state = compiled_steps(1, unroll=True)
  losses = []
  for step in range(4):
    state, loss = single_steps(state, images, schedule(step, 1))
    losses.append(loss[0])
  np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)
  # Adam moves a weight by at most lr a step, however small its gradient: rounding can flip
  # the sign of a vanishing gradient, so the bound is 4 steps of lr.
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=4e-4)
  assert int(whole.step) == int(state.step) == 4


def test_accelerator_scan_matches_cpu_unrolled_steps(images):
  # GPUs and TPUs run a call's steps in a lax.scan: the same updates as CPU's unrolled steps.
  results = []
  for unroll in (True, False):
    train_steps, state = compiled_steps(3, unroll)
    results.append(train_steps(state, images, schedule(0, 3)))
  (unrolled, unrolled_losses), (scanned, scanned_losses) = results
  np.testing.assert_allclose(scanned_losses, unrolled_losses, rtol=1e-5)
  # Adam moves a weight by at most lr a step, however small its gradient: rounding can flip
  # the sign of a vanishing gradient, so the bound is 3 steps of lr.
  for a, b in zip(jax.tree.leaves(unrolled.params), jax.tree.leaves(scanned.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=3e-4)
  assert int(scanned.step) == 3


def test_the_plan_is_decided_by_the_platform():
  assert update.plan_steps('cpu') == update.StepPlan(4, unroll=True)
  assert update.plan_steps('gpu') == update.StepPlan(64, unroll=False)
  assert update.plan_steps('tpu', 16) == update.StepPlan(16, unroll=False)
  assert update.plan_steps('cpu', 8) == update.StepPlan(8, unroll=True)
  with pytest.raises(ConfigError, match='--steps-per-dispatch 64 on CPU.*at most 8'):
    update.plan_steps('cpu', 64)


def test_a_linear_autoencoder_finds_the_principal_subspace():
  """Baldi & Hornik (1989): a linear autoencoder with biases trained on squared error has its
  minimum at the projection on the top-k principal subspace of the centred data. Trained here
  with the project's own optimizer and step, on data with distinct variances."""
  from scipy.linalg import subspace_angles
  rng = np.random.default_rng(0)
  dims, k = 8, 3
  rotation = np.linalg.qr(rng.normal(size=(dims, dims)))[0]
  scales = np.array([4.0, 3.0, 2.5, 1.0, 0.8, 0.6, 0.4, 0.2])
  data = (rng.normal(size=(2048, dims)) * scales) @ rotation.T + rng.normal(size=dims)
  centred = data - data.mean(axis=0)
  eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(data))
  top = eigenvectors[:, ::-1][:, :k]

  def loss(params, rows):
    codes = rows @ params['encoder']['kernel'] + params['encoder']['bias']
    recon = codes @ params['decoder']['kernel'] + params['decoder']['bias']
    return jnp.mean((recon - rows) ** 2)

  keys = jax.random.split(jax.random.key(0), 2)
  params = {'encoder': {'kernel': 0.1 * jax.random.normal(keys[0], (dims, k)),
                        'bias': jnp.zeros(k)},
            'decoder': {'kernel': 0.1 * jax.random.normal(keys[1], (k, dims)),
                        'bias': jnp.zeros(dims)}}
  optimizer = update.make_optimizer(3e-3, 0.0)
  plan = update.plan_steps('cpu')
  train_steps = jax.jit(update.make_train_steps(optimizer, plan, loss))
  state = update.TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
  rows = jnp.asarray(data, jnp.float32)
  batches = update.batch_schedule(0, len(data), 256, 0, 12_000)
  for start in range(0, len(batches), plan.steps_per_call):
    state, _ = train_steps(state, rows, batches[start:start + plan.steps_per_call])
  decoder = np.asarray(state.params['decoder']['kernel'], np.float64).T  # (dims, k) columns
  assert np.max(subspace_angles(decoder, top)) < 0.02  # radians
  full = np.mean((np.asarray(loss(state.params, rows))))
  assert full == pytest.approx(eigenvalues[:dims - k].sum() / dims, rel=0.01)
