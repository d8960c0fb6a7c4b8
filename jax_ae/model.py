"""The lab's convolutional autoencoder in Flax Linen (NHWC).

Layer names follow the lab's table, so `params` reads like the architecture:
encoder/{conv1, conv2, fc1, fc2}, decoder/{fc1, fc2, deconv1, deconv2}.

Two layers are written out by hand because XLA's CPU backend differentiates the library
versions slowly (results/bench/layers.json): the 2x2 max-pool and the 64-channel transposed
convolution. Both compute exactly what nn.max_pool and nn.ConvTranspose compute, with the same
parameters and the same gradients; tests/test_model.py holds them to that.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMAGE_SHAPE = (28, 28, 1)
LATENT_DIM = 576  # 64 * 3 * 3, the lab's code size
INITS = ('torch', 'flax')  # the lab's PyTorch reset_parameters, or Flax's layer defaults
NHWC = ('NHWC', 'HWIO', 'NHWC')


class Encoder(nn.Module):
  latent_dim: int = LATENT_DIM

  @nn.compact
  def __call__(self, images):  # (B, 28, 28, 1) in [0, 1]
    # relu(max_pool(x)) == max_pool(relu(x)); pooling first runs the ReLU on 4x fewer values.
    x = nn.relu(max_pool_2x2(nn.Conv(32, (5, 5), padding=2, name='conv1')(images)))  # (B, 14, 14, 32)
    x = nn.relu(max_pool_2x2(nn.Conv(64, (5, 5), padding=2, name='conv2')(x)))  # (B, 7, 7, 64)
    x = x.reshape(x.shape[0], -1)  # (B, 3136)
    x = nn.relu(nn.Dense(1600, name='fc1')(x))  # (B, 1600)
    # The code stays linear: a ReLU here would zero out dimensions the PCA study looks at.
    return nn.Dense(self.latent_dim, name='fc2')(x)  # (B, D)


class Decoder(nn.Module):
  @nn.compact
  def __call__(self, codes):  # (B, D)
    x = nn.relu(nn.Dense(1600, name='fc1')(codes))  # (B, 1600)
    x = nn.relu(nn.Dense(3136, name='fc2')(x))  # (B, 3136)
    x = x.reshape(x.shape[0], 7, 7, 64)  # (B, 7, 7, 64)
    x = nn.relu(ConvTranspose4x4(64, name='deconv1')(x))  # (B, 14, 14, 64)
    # One output channel: here the library layer differentiates faster than the phase
    # convolutions (results/bench/layers.json); it has the same parameters.
    return nn.sigmoid(torch_deconv(1, name='deconv2')(x))  # (B, 28, 28, 1)


class AutoEncoder(nn.Module):
  latent_dim: int = LATENT_DIM

  def setup(self):
    self.encoder = Encoder(self.latent_dim)
    self.decoder = Decoder()

  def __call__(self, images):
    return self.decoder(self.encoder(images))

  def encode(self, images):
    return self.encoder(images)

  def decode(self, codes):
    return self.decoder(codes)


def model_of(params):
  """The AutoEncoder whose parameters these are (its code size read off the encoder)."""
  return AutoEncoder(params['encoder']['fc2']['kernel'].shape[-1])


# One compiled init instead of a few hundred dispatched ops; the Flax draws that 'torch'
# replaces are dead code there and XLA drops them.
@functools.partial(jax.jit, static_argnames=('latent_dim', 'init'))
def init_params(rng, latent_dim=LATENT_DIM, init='torch'):
  """The model's params drawn from rng: PyTorch's initialization ('torch', the lab's) or
  Flax's layer defaults ('flax': lecun_normal kernels, zero biases)."""
  params = AutoEncoder(latent_dim).init(rng, jnp.zeros((1, *IMAGE_SHAPE)))['params']
  return torch_init(rng, params) if init == 'torch' else params


def torch_init(rng, params):
  """What PyTorch's reset_parameters draws for each layer of the same shapes.

  Linear, Conv2d and ConvTranspose2d all draw the weight with kaiming_uniform(a=sqrt(5)) and
  the bias alike: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in being the weight's dimension 1
  times the kernel's area. Every kernel here keeps those factors in all but its last axis:
  Dense (in, out), Conv (kh, kw, in, out), and the transposed convolutions' (kh, kw, out, in),
  which is where PyTorch's ConvTranspose2d gets its fan_in from its *output* channels.
  """
  layers = sorted((part, name) for part in params for name in params[part])
  drawn = {part: {} for part in params}
  for key, (part, name) in zip(jax.random.split(rng, len(layers)), layers):
    layer = params[part][name]
    bound = 1 / math.sqrt(math.prod(layer['kernel'].shape[:-1]))
    kernel_key, bias_key = jax.random.split(key)
    drawn[part][name] = {
        kind: jax.random.uniform(k, layer[kind].shape, layer[kind].dtype, -bound, bound)
        for kind, k in (('kernel', kernel_key), ('bias', bias_key))}
  return drawn


def torch_deconv(features, name=None):
  """PyTorch's ConvTranspose2d(in, features, kernel_size=4, stride=2, padding=1) in Flax.

  Flax pads the stride-dilated input where PyTorch crops the output, so PyTorch's p=1 is
  Flax's k - 1 - p = 2 (H -> 2H); transpose_kernel=True makes the (4, 4, features, in) kernel
  PyTorch's (in, features, 4, 4) weight transposed.
  """
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                          transpose_kernel=True, name=name)


class ConvTranspose4x4(nn.Module):
  """torch_deconv(features) as four stride-1 phase convolutions: the same parameters,
  initialisation, outputs and gradients.

  Each output pixel (2a + r, 2b + s) sees a 2x2 window of the input padded by 1, through
  the kernel taps of its phase (r, s). XLA's CPU backend differentiates these four stride-1
  convolutions about 10x faster than the input-dilated transposed convolution at 64 channels
  (results/bench/layers.json).
  """
  features: int

  @nn.compact
  def __call__(self, x):  # (B, H, W, in)
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, self.features, x.shape[-1]))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    batch, height, width, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H + 2, W + 2, in)
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
