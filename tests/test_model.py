import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_ae.model import (LATENT_DIM, AutoEncoder, ConvTranspose4x4, init_params, max_pool_2x2,
                          torch_deconv)

pytestmark = pytest.mark.usefixtures('float32_matmuls')


@pytest.fixture(scope='module')
def params():
  return init_params(jax.random.key(0))


def test_parameter_count_matches_the_pytorch_lab(params):
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 12_004_033


def test_parameter_tree_reads_like_the_lab_table(params):
  shapes = jax.tree.map(lambda leaf: leaf.shape, params)
  assert shapes == {
      'encoder': {
          'conv1': {'kernel': (5, 5, 1, 32), 'bias': (32,)},
          'conv2': {'kernel': (5, 5, 32, 64), 'bias': (64,)},
          'fc1': {'kernel': (3136, 1600), 'bias': (1600,)},
          'fc2': {'kernel': (1600, 576), 'bias': (576,)},
      },
      'decoder': {
          'fc1': {'kernel': (576, 1600), 'bias': (1600,)},
          'fc2': {'kernel': (1600, 3136), 'bias': (3136,)},
          'deconv1': {'kernel': (4, 4, 64, 64), 'bias': (64,)},
          'deconv2': {'kernel': (4, 4, 1, 64), 'bias': (1,)},
      },
  }


def test_every_layer_output_shape(params):
  images = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  _, state = AutoEncoder().apply({'params': params}, images, capture_intermediates=True)
  shapes = {'/'.join(path): value[0].shape
            for path, value in _flatten(state['intermediates']).items()}
  assert shapes == {
      'encoder/conv1/__call__': (3, 28, 28, 32),
      'encoder/conv2/__call__': (3, 14, 14, 64),
      'encoder/fc1/__call__': (3, 1600),
      'encoder/fc2/__call__': (3, LATENT_DIM),
      'encoder/__call__': (3, LATENT_DIM),
      'decoder/fc1/__call__': (3, 1600),
      'decoder/fc2/__call__': (3, 3136),
      'decoder/deconv1/__call__': (3, 14, 14, 64),
      'decoder/deconv2/__call__': (3, 28, 28, 1),
      'decoder/__call__': (3, 28, 28, 1),
      '__call__': (3, 28, 28, 1),
  }


def _flatten(tree, prefix=()):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def test_codes_and_reconstructions(params):
  images = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1))
  model = AutoEncoder()
  codes = model.apply({'params': params}, images, method='encode')
  recon = model.apply({'params': params}, images)
  assert codes.shape == (5, LATENT_DIM) and codes.dtype == jnp.float32
  assert recon.shape == images.shape
  assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
  np.testing.assert_allclose(model.apply({'params': params}, codes, method='decode'), recon)


def torch_conv_transpose(x, weight, bias, stride=2, padding=1):
  """PyTorch's ConvTranspose2d from its definition: every input pixel scatters a weighted
  kernel into the output at stride `stride`, and `padding` rows/columns are cut from each
  border. x (B, H, W, Cin); weight in PyTorch's layout (Cin, Cout, kh, kw)."""
  batch, height, width, _ = x.shape
  _, out_channels, kh, kw = weight.shape
  full = np.zeros((batch, (height - 1) * stride + kh, (width - 1) * stride + kw, out_channels))
  for i in range(height):
    for j in range(width):
      full[:, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
          'bc,cokl->bklo', x[:, i, j], weight)
  return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding] + bias


@pytest.mark.parametrize('in_channels,out_channels,size', [(64, 64, 7), (64, 1, 14), (3, 5, 4)])
def test_deconv_is_pytorch_conv_transpose_k4_s2_p1(in_channels, out_channels, size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, size, size, in_channels)).astype(np.float32)
  torch_weight = rng.normal(size=(in_channels, out_channels, 4, 4)).astype(np.float32)
  bias = rng.normal(size=(out_channels,)).astype(np.float32)
  # Flax's kernel for the layer is (kh, kw, out, in): PyTorch's weight transposed.
  params = {'kernel': torch_weight.transpose(2, 3, 1, 0), 'bias': bias}
  out = ConvTranspose4x4(out_channels).apply({'params': params}, x)
  assert out.shape == (2, 2 * size, 2 * size, out_channels)  # PyTorch: (H-1)*2 - 2 + 4 = 2H
  np.testing.assert_allclose(out, torch_conv_transpose(x, torch_weight, bias), atol=1e-4)


def test_pytorch_padding_taken_literally_gives_the_wrong_shape():
  # The trap this project avoids: PyTorch's padding=1 passed straight to Flax.
  naive = nn.ConvTranspose(64, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
  out, _ = naive.init_with_output(jax.random.key(0), jnp.zeros((1, 7, 7, 64)))
  assert out.shape == (1, 12, 12, 64)


@pytest.mark.parametrize('in_channels,out_channels,size', [(64, 64, 7), (64, 1, 14)])
def test_deconv_matches_flax_conv_transpose_with_gradients(in_channels, out_channels, size):
  x = jax.random.normal(jax.random.key(1), (2, size, size, in_channels))
  reference = torch_deconv(out_channels)  # the library layer ConvTranspose4x4 stands in for
  params = reference.init(jax.random.key(2), x)
  # Same initialisation, so swapping the layers keeps every run's starting point.
  initial = ConvTranspose4x4(out_channels).init(jax.random.key(2), x)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(initial)):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.1, params)

  def loss(layer):
    return lambda params, x: jnp.sum(jnp.sin(layer.apply(params, x)))

  expected = jax.value_and_grad(loss(reference), argnums=(0, 1))(params, x)
  actual = jax.value_and_grad(loss(ConvTranspose4x4(out_channels)), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


def test_max_pool_matches_flax_forward_and_gradient_with_ties():
  # Small integers tie often, like the flat backgrounds of digits after a ReLU.
  x = jnp.round(jax.random.normal(jax.random.key(3), (2, 8, 8, 3)) * 1.5)
  weights = jnp.arange(1.0, 4.0)

  def loss(pool):
    return lambda x: jnp.sum(jnp.sin(pool(x)) * weights)

  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool_2x2(x), flax_pool(x))
  np.testing.assert_array_equal(jax.grad(loss(max_pool_2x2))(x), jax.grad(loss(flax_pool))(x))
  windows = x.reshape(2, 4, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
  assert np.mean([len(set(w.tolist())) < 4 for w in np.asarray(windows)]) > 0.3  # many ties
