"""The lab's convolutional autoencoder in Flax Linen (NHWC).

Layer names follow the lab's table, so `params` reads like the architecture:
encoder/{conv1, conv2, fc1, fc2}, decoder/{fc1, fc2, deconv1, deconv2}.

Two layers are written out by hand because XLA's CPU backend runs the library versions
slowly (measured in results/bench/): the 2x2 max-pool and the transposed convolutions.
Both compute exactly what nn.max_pool and nn.ConvTranspose compute, with the same
parameters and the same gradients; tests/test_model.py holds them to that.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMAGE_SHAPE = (28, 28, 1)
LATENT_DIM = 576  # 64 * 3 * 3, the lab's code size
NHWC = ('NHWC', 'HWIO', 'NHWC')


class Encoder(nn.Module):
  @nn.compact
  def __call__(self, images):  # (B, 28, 28, 1) in [0, 1]
    # relu(max_pool(x)) == max_pool(relu(x)); pooling first runs the ReLU on 4x fewer values.
    x = nn.relu(max_pool_2x2(nn.Conv(32, (5, 5), padding=2, name='conv1')(images)))  # (B, 14, 14, 32)
    x = nn.relu(max_pool_2x2(nn.Conv(64, (5, 5), padding=2, name='conv2')(x)))  # (B, 7, 7, 64)
    x = x.reshape(x.shape[0], -1)  # (B, 3136)
    x = nn.relu(nn.Dense(1600, name='fc1')(x))  # (B, 1600)
    # The code stays linear: a ReLU here would zero out dimensions the PCA study looks at.
    return nn.Dense(LATENT_DIM, name='fc2')(x)  # (B, 576)


class Decoder(nn.Module):
  @nn.compact
  def __call__(self, codes):  # (B, 576)
    x = nn.relu(nn.Dense(1600, name='fc1')(codes))  # (B, 1600)
    x = nn.relu(nn.Dense(3136, name='fc2')(x))  # (B, 3136)
    x = x.reshape(x.shape[0], 7, 7, 64)  # (B, 7, 7, 64)
    x = nn.relu(ConvTranspose4x4(64, name='deconv1')(x))  # (B, 14, 14, 64)
    return nn.sigmoid(ConvTranspose4x4(1, name='deconv2')(x))  # (B, 28, 28, 1)


class AutoEncoder(nn.Module):
  def setup(self):
    self.encoder = Encoder()
    self.decoder = Decoder()

  def __call__(self, images):
    return self.decoder(self.encoder(images))

  def encode(self, images):
    return self.encoder(images)

  def decode(self, codes):
    return self.decoder(codes)


@jax.jit  # one compiled init instead of a few hundred dispatched ops
def init_params(rng):
  return AutoEncoder().init(rng, jnp.zeros((1, *IMAGE_SHAPE)))['params']


class ConvTranspose4x4(nn.Module):
  """PyTorch's ConvTranspose2d(in, features, kernel_size=4, stride=2, padding=1): H -> 2H.

  The same layer as nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2),
  (2, 2)), transpose_kernel=True): Flax pads the stride-dilated input, PyTorch crops the
  output, so PyTorch's p=1 is Flax's k - 1 - p = 2. The kernel is (4, 4, features, in),
  PyTorch's (in, features, 4, 4) weight transposed, initialised as Flax's.

  Each output pixel (2a + r, 2b + s) sees a 2x2 window of the input padded by 1, through
  the kernel taps of its phase (r, s). XLA's CPU backend differentiates these stride-1
  convolutions about 5x faster than the dilated transposed convolution.
  """
  features: int

  @nn.compact
  def __call__(self, x):  # (B, H, W, in)
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, self.features, x.shape[-1]))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    batch, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H + 2, W + 2, in)
    if self.features == 1:
      # One output channel: one 3x3 convolution into the 4 phases beats 4 thin ones.
      phases = lax.conv_general_dilated(padded, subpixel_kernel(kernel), (1, 1), 'VALID',
                                        dimension_numbers=NHWC)  # (B, H, W, 4 * out)
    else:
      phases = jnp.concatenate([
          lax.conv_general_dilated(padded[:, r:r + height + 1, s:s + width + 1],
                                   phase_kernel(kernel, r, s), (1, 1), 'VALID',
                                   dimension_numbers=NHWC)
          for r in (0, 1) for s in (0, 1)], axis=-1)  # (B, H, W, 4 * out), phase-major
    out = phases.reshape(batch, height, width, 2, 2, self.features)  # (B, H, W, r, s, out)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, self.features)
    return out + bias  # (B, 2H, 2W, out)


def phase_kernel(kernel, r, s):
  """(2, 2, in, out) taps of output phase (r, s): window offset e meets kernel tap 3 - r - 2e."""
  return jnp.stack([jnp.stack([kernel[3 - r - 2 * eh, 3 - s - 2 * ew].T for ew in (0, 1)])
                    for eh in (0, 1)])


def subpixel_kernel(kernel):
  """(3, 3, in, 4 * out): the four phase kernels on one 3x3 window, zero where a phase's
  2x2 window does not reach; output channel (2r + s) * out + o is pixel (2a + r, 2b + s, o)."""
  zero = jnp.zeros(kernel.shape[2:][::-1], kernel.dtype)  # (in, out)

  def taps(dh, dw):
    return jnp.concatenate([
        kernel[r + 3 - 2 * dh, s + 3 - 2 * dw].T
        if 0 <= r + 3 - 2 * dh < 4 and 0 <= s + 3 - 2 * dw < 4 else zero
        for r in (0, 1) for s in (0, 1)], axis=-1)

  return jnp.stack([jnp.stack([taps(dh, dw) for dw in range(3)]) for dh in range(3)])


@jax.custom_vjp
def max_pool_2x2(x):
  """nn.max_pool(x, (2, 2), strides=(2, 2)), forward and gradient, on (B, H, W, C)."""
  return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
  corners = x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]
  pooled = jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))
  return pooled, (corners[:3], pooled)


def _max_pool_bwd(residuals, grad):
  # XLA's select-and-scatter gradient is slow on CPU. Ties are common (flat backgrounds):
  # like it (and PyTorch), route the gradient to the first maximum in row-major order only.
  corners, pooled = residuals
  taken = jnp.zeros(grad.shape, bool)
  grads = []
  for corner in corners:
    first = (corner == pooled) & ~taken
    grads.append(jnp.where(first, grad, 0.0))
    taken |= first
  grads.append(jnp.where(taken, 0.0, grad))
  batch, height, width, channels = grad.shape
  windows = jnp.stack(grads, axis=3).reshape(batch, height, width, 2, 2, channels)
  return (windows.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
