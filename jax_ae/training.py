"""The training core: a functional train state, one jitted update function, evaluation."""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_ae.model import AutoEncoder, init_params


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array  # () int32, updates applied so far


def make_optimizer(lr, weight_decay):
  # PyTorch's Adam(weight_decay=wd) adds wd * param to the gradient *before* the moments
  # (coupled L2), which is this chain; optax.adamw would decay after them.
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def init_state(seed, optimizer):
  params = init_params(jax.random.key(seed))
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def to_float(images):
  return images.astype(jnp.float32) / 255.0  # uint8 (B, 28, 28, 1) -> [0, 1]


def mse_loss(params, images):
  """Mean squared error over every pixel of the batch, as torch.nn.MSELoss()."""
  return jnp.mean((AutoEncoder().apply({'params': params}, images) - images) ** 2)


@functools.partial(jax.jit, static_argnames=('lr', 'weight_decay', 'unroll'), donate_argnums=0)
def train_steps(state, images, batch_indices, *, lr, weight_decay, unroll=None):
  """K updates in one dispatch, so the device never waits on the host between steps.

  images: (N, 28, 28, 1) uint8, the whole training split, kept on the device;
  batch_indices: (K, B) int32, the rows of each of K consecutive batches;
  unroll: the K steps as straight-line code rather than a lax.scan; None: on CPU only.
  Returns the new state and the K losses.
  """
  optimizer = make_optimizer(lr, weight_decay)

  def step(state, indices):
    batch = to_float(images[indices])  # (B, 28, 28, 1)
    loss, grads = jax.value_and_grad(mse_loss)(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state, state.step + 1), loss

  if unroll is None:
    unroll = jax.default_backend() == 'cpu'
  if unroll:
    # XLA:CPU runs the body of a loop (lax.scan, even of length 1) about 6x slower than
    # the same ops in straight-line code (results/bench/scan.json): unroll it there.
    losses = []
    for indices in batch_indices:
      state, loss = step(state, indices)
      losses.append(loss)
    return state, jnp.stack(losses)
  return jax.lax.scan(step, state, batch_indices)


def batch_schedule(seed, num_examples, batch_size, first_step, num_steps):
  """(num_steps, batch_size) row indices for global steps first_step .. first_step+num_steps-1.

  Epoch e visits the rows in the order of a permutation seeded by (seed, e) and drops the
  last partial batch, so any step's batch depends on (seed, step) alone: a resumed run sees
  exactly the batches an uninterrupted one would.
  """
  steps_per_epoch = num_examples // batch_size
  steps = np.arange(first_step, first_step + num_steps)
  epochs, positions = np.divmod(steps, steps_per_epoch)
  rows = np.empty((num_steps, batch_size), np.int32)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    batches = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    rows[epochs == epoch] = batches[positions[epochs == epoch]]
  return rows


@jax.jit
def _image_errors(params, images):
  batch = to_float(images)
  recon = AutoEncoder().apply({'params': params}, batch)
  return jnp.mean((recon - batch) ** 2, axis=(1, 2, 3))  # (B,)


@jax.jit
def _encode(params, images):
  return AutoEncoder().apply({'params': params}, to_float(images), method='encode')


@jax.jit
def _reconstruct(params, images):
  return AutoEncoder().apply({'params': params}, to_float(images))


@jax.jit
def _decode(params, codes):
  return AutoEncoder().apply({'params': params}, codes, method='decode')


def batched(fn, params, inputs, batch_size=500):
  """fn(params, inputs) over a whole split in fixed-size batches (one compilation)."""
  outputs = []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
    padded[:len(chunk)] = chunk
    outputs.append(np.asarray(fn(params, padded))[:len(chunk)])
  return np.concatenate(outputs)


def image_errors(params, images):
  """Per-image MSE per pixel, (N,)."""
  return batched(_image_errors, params, images)


def encode(params, images):
  """Latent codes, (N, 576)."""
  return batched(_encode, params, images)


def reconstruct(params, images):
  """Reconstructions in [0, 1], (N, 28, 28, 1)."""
  return batched(_reconstruct, params, images)


def decode(params, codes):
  """Images in [0, 1] from latent codes, (N, 576) -> (N, 28, 28, 1)."""
  return batched(_decode, params, np.asarray(codes, np.float32))
