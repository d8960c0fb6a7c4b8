"""The lab's convolutional autoencoder in Flax Linen (NHWC).

Layer names follow the lab's table, so `params` reads like the architecture:
encoder/{conv1, conv2, fc1, fc2}, decoder/{fc1, fc2, deconv1, deconv2}.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGE_SHAPE = (28, 28, 1)
LATENT_DIM = 576  # 64 * 3 * 3, the lab's code size

# PyTorch's ConvTranspose2d(k=4, s=2, p=1) pads the *output* by p; lax/Flax pad the
# stride-dilated *input*, so the same layer needs k - 1 - p = 2 on each side (H -> 2H).
TORCH_DECONV_PADDING = ((2, 2), (2, 2))


class Encoder(nn.Module):
  @nn.compact
  def __call__(self, images):  # (B, 28, 28, 1) in [0, 1]
    x = nn.relu(nn.Conv(32, (5, 5), padding=2, name='conv1')(images))  # (B, 28, 28, 32)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, 14, 14, 32)
    x = nn.relu(nn.Conv(64, (5, 5), padding=2, name='conv2')(x))  # (B, 14, 14, 64)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, 7, 7, 64)
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
    x = nn.relu(deconv(64, 'deconv1')(x))  # (B, 14, 14, 64)
    return nn.sigmoid(deconv(1, 'deconv2')(x))  # (B, 28, 28, 1)


def deconv(features, name):
  # transpose_kernel=True makes the kernel (kh, kw, out, in) the exact transpose of
  # PyTorch's (in, out, kh, kw) weight: the layer is torch's, weight for weight.
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=TORCH_DECONV_PADDING,
                          transpose_kernel=True, name=name)


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
