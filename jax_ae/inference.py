"""The trained model applied to whole splits: codes, decodes, reconstructions, per-image errors.

Each function takes params and host arrays and returns numpy arrays; they run in fixed-size
batches, so a split of any length compiles each function once.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jax_ae.model import model_of
from jax_ae.images import to_float

BATCH = 500


@jax.jit
def _image_errors(params, images):
  batch = to_float(images)
  recon = model_of(params).apply({'params': params}, batch)
  return jnp.mean((recon - batch) ** 2, axis=(1, 2, 3))  # (B,)


@jax.jit
def _encode(params, images):
  return model_of(params).apply({'params': params}, to_float(images), method='encode')


@jax.jit
def _reconstruct(params, images):
  return model_of(params).apply({'params': params}, to_float(images))


@jax.jit
def _decode(params, codes):
  return model_of(params).apply({'params': params}, codes, method='decode')


def _batched(fn, params, inputs):
  """fn(params, inputs) over a whole split in fixed-size batches (one compilation)."""
  outputs = []
  for start in range(0, len(inputs), BATCH):
    chunk = inputs[start:start + BATCH]
    padded = np.zeros((BATCH, *chunk.shape[1:]), chunk.dtype)
    padded[:len(chunk)] = chunk
    outputs.append(np.asarray(fn(params, padded))[:len(chunk)])
  return np.concatenate(outputs)


def image_errors(params, images):
  """Per-image MSE per pixel of uint8 (N, 28, 28, 1) images, (N,)."""
  return _batched(_image_errors, params, images)


def encode(params, images):
  """Latent codes of uint8 (N, 28, 28, 1) images, (N, D)."""
  return _batched(_encode, params, images)


def reconstruct(params, images):
  """Reconstructions in [0, 1] of uint8 (N, 28, 28, 1) images, (N, 28, 28, 1)."""
  return _batched(_reconstruct, params, images)


def decode(params, codes):
  """Images in [0, 1] from latent codes, (N, D) -> (N, 28, 28, 1)."""
  return _batched(_decode, params, np.asarray(codes, np.float32))
