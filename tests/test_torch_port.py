"""The lab's PyTorch network and this project's model compute the same thing, weight for weight.

Only the public path is used (AutoEncoder().apply, mse_loss, make_optimizer), so
these tests hold any rewrite of the model's internals to the PyTorch lab.
"""
import jax
import numpy as np
import optax
import pytest

from jax_ae import torch_port
from jax_ae.update import make_optimizer, mse_loss
from jax_ae.model import AutoEncoder, init_params

torch = pytest.importorskip('torch')


# Compiled once, for the gradient test and the optimizer test.
loss_and_grads = jax.jit(jax.value_and_grad(mse_loss))


def lab_network(seed=0):
  torch.manual_seed(seed)
  return torch_port.torch_autoencoder()


def nchw(images):
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


@pytest.fixture(scope='module')
def images():
  return np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope='module')
def network():
  return lab_network()


@pytest.fixture(scope='module')
def params(network):
  return torch_port.params_from_torch(network.state_dict())


def assert_trees_close(actual, expected, rtol, atol=0.0, atol_vs_scale=0.0):
  """Leaf by leaf; atol_vs_scale is relative to the leaf's largest magnitude, since the
  gradients of different layers differ by orders of magnitude."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(actual)[0],
                          jax.tree.leaves(expected)):
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol + atol_vs_scale * np.abs(b).max(),
                               err_msg=jax.tree_util.keystr(path))


def test_params_have_the_tree_of_init_params(params):
  like = jax.eval_shape(init_params, jax.random.key(0))
  assert jax.tree.structure(params) == jax.tree.structure(like)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(like)):
    assert (got.shape, got.dtype) == (want.shape, want.dtype)


def test_codes_agree(network, params, images):
  with torch.no_grad():
    expected = network.encoder(nchw(images)).numpy()
  codes = AutoEncoder().apply({'params': params}, images, method='encode')
  # Observed: max |diff| ~ 7e-7 of the largest code.
  np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_reconstructions_agree(network, params, images):
  with torch.no_grad():
    expected = network(nchw(images)).numpy().transpose(0, 2, 3, 1)
  recon = AutoEncoder().apply({'params': params}, images)
  np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-6)  # observed: 6e-8


def test_loss_and_every_gradient_agree(params, images):
  network = lab_network()
  loss = torch.nn.MSELoss()(network(nchw(images)), nchw(images))
  loss.backward()
  expected = torch_port.params_from_torch({name: p.grad for name, p in network.named_parameters()})
  value, grads = loss_and_grads(params, images)
  np.testing.assert_allclose(value, loss.item(), rtol=1e-5)
  # float32 sums over the B * H * W = 6,272 positions of a conv layer: observed max
  # |diff| ~ 3e-6 of a layer's largest gradient.
  assert_trees_close(grads, expected, rtol=1e-4, atol_vs_scale=1e-5)


def test_two_adam_steps_agree_with_torch_adam():
  rng = np.random.default_rng(1)
  batches = rng.random((2, 8, 28, 28, 1), dtype=np.float32)
  network = lab_network()
  params = torch_port.params_from_torch(network.state_dict())
  torch_adam = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-6)
  optimizer = make_optimizer(1e-4, 1e-6)

  @jax.jit
  def update(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for batch in batches:
    torch_adam.zero_grad()
    torch.nn.MSELoss()(network(nchw(batch)), nchw(batch)).backward()
    torch_adam.step()
    params, opt_state = update(params, opt_state, loss_and_grads(params, batch)[1])
  expected = torch_port.params_from_torch(network.state_dict())
  # Adam's first steps move every weight by ~lr = 1e-4; observed max |diff| 3e-8.
  assert_trees_close(params, expected, rtol=0, atol=1e-6)


def test_round_trip_is_exact(network, params):
  state_dict = torch_port.params_to_torch(params)
  assert list(state_dict) == list(network.state_dict())
  for key, value in network.state_dict().items():
    assert torch.equal(state_dict[key], value), key
  lab_network(seed=1).load_state_dict(state_dict)  # strict: every key, every shape


@pytest.mark.parametrize('key', [None, 'state_dict', 'model_state_dict', 'model'])
def test_load_torch_weights_reads_common_layouts(network, params, tmp_path, key):
  saved = network.state_dict() if key is None else {key: network.state_dict(), 'epoch': 3}
  torch.save(saved, tmp_path / 'lab.pt')
  loaded = torch_port.load_torch_weights(tmp_path / 'lab.pt')
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)


def test_a_whole_pickled_model_is_refused_in_one_line(network, tmp_path):
  torch.save(network, tmp_path / 'whole.pt')
  with pytest.raises(torch_port.TorchWeightsError, match=r'model\.state_dict\(\)') as error:
    torch_port.load_torch_weights(tmp_path / 'whole.pt')
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('key,shape,message', [
    ('decoder.7.bias', None, r"has no 'decoder\.7\.bias' \(expected \(1,\)\)"),
    ('encoder.7.weight', (1000, 3136),
     r"'encoder\.7\.weight' has shape \(1000, 3136\), expected \(1600, 3136\)"),
    ('encoder.1.weight', (32,), r"the lab's state_dict has no 'encoder\.1\.weight'"),
])
def test_another_network_is_refused_in_one_line(network, key, shape, message):
  state_dict = dict(network.state_dict())
  if shape is None:
    del state_dict[key]
  else:
    state_dict[key] = torch.zeros(shape)
  with pytest.raises(torch_port.TorchWeightsError, match=message) as error:
    torch_port.params_from_torch(state_dict)
  assert str(error.value).startswith("this is not the lab's network: ")
  assert '\n' not in str(error.value)
