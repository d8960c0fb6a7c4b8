"""The lab's PyTorch network and this project's model compute the same thing, weight for weight,
and a PyTorch model of the lab's network loads whatever its module names and wrapping.

Only the public path is used (AutoEncoder().apply, update.mse_loss, make_optimizer), so
these tests hold any rewrite of the model's internals to the PyTorch lab.
"""
import jax
import numpy as np
import optax
import pytest

from jax_ae import data, study, torch_port, update
from jax_ae.model import AutoEncoder, init_params

torch = pytest.importorskip('torch')
nn, F = torch.nn, torch.nn.functional

# Float32 parity on every backend: GPUs default to TF32 matmuls and TPUs to bf16 passes.
pytestmark = pytest.mark.usefixtures('float32_matmuls')

# Compiled once, for the gradient test and the optimizer test.
loss_and_grads = jax.jit(jax.value_and_grad(update.mse_loss))


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
  optimizer = update.make_optimizer(1e-4, 1e-6)

  @jax.jit
  def adam_step(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for batch in batches:
    torch_adam.zero_grad()
    torch.nn.MSELoss()(network(nchw(batch)), nchw(batch)).backward()
    torch_adam.step()
    params, opt_state = adam_step(params, opt_state, loss_and_grads(params, batch)[1])
  expected = torch_port.params_from_torch(network.state_dict())
  # Adam's first steps move every weight by ~lr = 1e-4; observed max |diff| 3e-8.
  assert_trees_close(params, expected, rtol=0, atol=1e-6)


def test_round_trip_is_exact(network, params):
  state_dict = torch_port.params_to_torch(params)
  assert list(state_dict) == list(network.state_dict())
  for key, value in network.state_dict().items():
    assert torch.equal(state_dict[key], value), key
  lab_network(seed=1).load_state_dict(state_dict)  # strict: every key, every shape


class StudentAutoEncoder(nn.Module):
  """The lab's network as a student might write it: its own module names, the decoder's
  layers registered before the encoder's, functional ReLUs and pooling."""

  def __init__(self):
    super().__init__()
    self.fc3, self.fc4 = nn.Linear(576, 1600), nn.Linear(1600, 3136)
    self.deconv1 = nn.ConvTranspose2d(64, 64, 4, 2, 1)
    self.deconv2 = nn.ConvTranspose2d(64, 1, 4, 2, 1)
    self.conv1, self.conv2 = nn.Conv2d(1, 32, 5, padding=2), nn.Conv2d(32, 64, 5, padding=2)
    self.fc1, self.fc2 = nn.Linear(3136, 1600), nn.Linear(1600, 576)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = self.fc2(F.relu(self.fc1(x.flatten(1))))  # channel-first, as the lab
    x = F.relu(self.fc4(F.relu(self.fc3(x)))).view(-1, 64, 7, 7)
    return torch.sigmoid(self.deconv2(F.relu(self.deconv1(x))))


def student_network(seed=0):
  torch.manual_seed(seed)
  return StudentAutoEncoder()


def renamed(network, rename):
  """network's state_dict with every key renamed: the lab's network under other names."""
  return {rename(key): value for key, value in network.state_dict().items()}


NAMINGS = {
    'lab': lambda key: key,
    'short': lambda key: key.replace('encoder.', 'enc.').replace('decoder.', 'dec.'),
    'dataparallel': lambda key: f'module.{key}',
    'compiled in dataparallel': lambda key: f'module._orig_mod.{key}',
    'reversed order': lambda key: key,  # the dict reversed below
}


@pytest.mark.parametrize('naming', NAMINGS)
def test_any_module_names_and_order_load_the_same_params(network, params, naming):
  state_dict = renamed(network, NAMINGS[naming])
  if naming == 'reversed order':
    state_dict = dict(reversed(state_dict.items()))
  for got, want in zip(jax.tree.leaves(torch_port.params_from_torch(state_dict)),
                       jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)


def test_a_students_own_lab_network_computes_the_same(images):
  student = student_network()
  params = torch_port.params_from_torch(student.state_dict())
  with torch.no_grad():
    expected = student(nchw(images)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(AutoEncoder().apply({'params': params}, images), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('wrap', [
    lambda state_dict: state_dict,
    lambda state_dict: {'epoch': 3, 'model_state_dict': state_dict, 'optimizer_state_dict': {}},
    lambda state_dict: {'state_dict': state_dict, 'epoch': 3},
    lambda state_dict: {'model': state_dict, 'loss': 0.01},
], ids=['state_dict', 'model_state_dict', 'state_dict key', 'model key'])
@pytest.mark.parametrize('parallel', [False, True], ids=['plain', 'DataParallel'])
def test_load_torch_weights_unwraps_checkpoints(tmp_path, wrap, parallel):
  student = student_network()
  model = nn.DataParallel(student) if parallel else student  # keys 'module.conv1.weight', ...
  torch.save(wrap(model.state_dict()), tmp_path / 'student.pt')
  loaded = torch_port.load_torch_weights(tmp_path / 'student.pt')
  expected = torch_port.params_from_torch(student.state_dict())
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)


def test_the_analysis_reports_pytorchs_own_test_mse(tmp_path):
  """The test MSE in metrics.json of a PyTorch model is PyTorch's MSELoss on the test images."""
  rng = np.random.default_rng(0)
  labels = np.arange(60, dtype=np.int32) % 10
  images = rng.integers(0, 256, (60, 28, 28, 1), dtype=np.uint8)
  split = data.Split(images, labels)
  dataset = data.Dataset('random', split, split, data.DIGITS)
  student = student_network()
  torch.save({'epoch': 1, 'model_state_dict': nn.DataParallel(student).state_dict()},
             tmp_path / 'student.pt')
  student.cpu()  # DataParallel moved it to a GPU, where there is one
  params = torch_port.load_torch_weights(tmp_path / 'student.pt')
  metrics = study.measure(params, dataset, {'torch_weights': 'student.pt'}).metrics
  with torch.no_grad():
    batch = nchw(images.astype(np.float32) / 255)
    expected = nn.MSELoss()(student(batch), batch).item()
  assert metrics['test_mse']['overall'] == pytest.approx(expected, rel=1e-5)


def test_a_whole_pickled_model_is_refused_in_one_line(network, tmp_path):
  torch.save(network, tmp_path / 'whole.pt')
  with pytest.raises(torch_port.TorchWeightsError, match=r'model\.state_dict\(\)') as error:
    torch_port.load_torch_weights(tmp_path / 'whole.pt')
  assert '\n' not in str(error.value)


def test_a_checkpoint_without_a_known_key_is_refused_in_one_line(network, tmp_path):
  torch.save({'net': network.state_dict(), 'epoch': 3}, tmp_path / 'checkpoint.pt')
  with pytest.raises(torch_port.TorchWeightsError,
                     match=r"holds a dict of 'net', 'epoch', and none of 'model_state_dict'"):
    torch_port.load_torch_weights(tmp_path / 'checkpoint.pt')


def with_batch_norm(state_dict):
  return {**state_dict, 'bn.weight': torch.ones(32), 'bn.bias': torch.zeros(32),
          'bn.running_mean': torch.zeros(32)}


def narrower_fc1(state_dict):
  return {**state_dict, 'encoder.7.weight': torch.zeros(1000, 3136)}


def without(key):
  return lambda state_dict: {k: v for k, v in state_dict.items() if k != key}


def two_models(state_dict):
  return {**{f'student.{k}': v for k, v in state_dict.items()},
          **{f'teacher.{k}': v for k, v in state_dict.items()}}


@pytest.mark.parametrize('change,message', [
    (with_batch_norm, r"it holds 'bn\.running_mean', and the lab's layers hold only a weight "
                      'and a bias each'),
    (lambda sd: {**sd, 'norm.weight': torch.ones(32), 'norm.bias': torch.zeros(32)},
     r"'norm\.weight' \(32,\) with bias \(32,\) is no layer of it$"),
    (narrower_fc1, r"'encoder\.7\.weight' \(1000, 3136\) with bias \(1600,\) is no layer of it; "
                   r"the lab's encoder fc1, its layer 3, has weight \(1600, 3136\)"),
    (without('decoder.7.bias'), r"'decoder\.7\.weight' has no bias"),
    (without('decoder.7.weight'), r"'decoder\.7\.bias' has no weight"),
    (lambda sd: without('decoder.7.bias')(without('decoder.7.weight')(sd)),
     r"it has no layer of the shapes of the lab's decoder deconv2 \(weight \(64, 1, 4, 4\), "
     r'bias \(1,\)\)'),
    (lambda sd: {**sd, 'decoder.7.num_batches_tracked': torch.tensor(0)},
     r"it holds 'decoder\.7\.num_batches_tracked'"),
])
def test_another_network_is_refused_in_one_line(network, change, message):
  with pytest.raises(torch_port.TorchWeightsError, match=message) as error:
    torch_port.params_from_torch(change(dict(network.state_dict())))
  assert str(error.value).startswith("this is not the lab's network: ")
  assert '\n' not in str(error.value)


def test_two_copies_of_the_network_are_ambiguous(network):
  with pytest.raises(torch_port.TorchWeightsError,
                     match=r"ambiguous: 'student\.encoder\.0' and 'teacher\.encoder\.0' both "
                           r"have the shapes of the lab's encoder conv1") as error:
    torch_port.params_from_torch(two_models(network.state_dict()))
  assert '\n' not in str(error.value)


# The lab's initialization and a whole run, against PyTorch itself.

def test_each_layer_starts_from_pytorchs_own_distribution():
  """JAX's draws against PyTorch's own reset_parameters, sampled here: per layer, the bound
  (the largest magnitude drawn), the mean and the spread, and a two-sample KS test."""
  from scipy.stats import ks_2samp
  seeds = range(4)  # pooled, so that the one-value bias of deconv2 has a few draws too
  ours = [init_params(jax.random.key(seed)) for seed in seeds]
  theirs = [torch_port.params_from_torch(lab_network(seed).state_dict()) for seed in seeds]
  for (path, _), *pairs in zip(jax.tree_util.tree_flatten_with_path(ours[0])[0],
                               *[zip(jax.tree.leaves(a), jax.tree.leaves(b))
                                 for a, b in zip(ours, theirs)]):
    name = jax.tree_util.keystr(path)
    a = np.concatenate([np.ravel(x) for x, _ in pairs])
    b = np.concatenate([np.ravel(y) for _, y in pairs])
    if len(a) >= 1000:
      np.testing.assert_allclose(np.abs(a).max(), np.abs(b).max(), rtol=0.02, err_msg=name)
      np.testing.assert_allclose(a.std(), b.std(), rtol=0.05, err_msg=name)
      assert abs(a.mean() - b.mean()) < 5 * b.std() * np.sqrt(2 / len(a)), name
    else:
      assert np.abs(a).max() <= np.abs(b).max() * 1.5 + 1e-6, name
    assert ks_2samp(a[:100_000], b[:100_000]).pvalue > 1e-4, name


def test_flax_init_is_not_pytorchs():
  """The flag's other value really is another start: zero biases, wider kernels."""
  flax = init_params(jax.random.key(0), init='flax')
  torch_like = init_params(jax.random.key(0))
  assert not np.any(flax['encoder']['fc1']['bias'])
  assert np.any(torch_like['encoder']['fc1']['bias'])
  ratio = np.std(flax['encoder']['fc1']['kernel']) / np.std(torch_like['encoder']['fc1']['kernel'])
  assert ratio == pytest.approx(np.sqrt(3), rel=0.02)  # lecun_normal 1/sqrt(n) vs U(+-1/sqrt(n))


WHOLE_RUN_STEPS = 120


@pytest.mark.slow  # 120 steps in both frameworks
def test_a_whole_run_follows_pytorchs():
  """The same initial weights (PyTorch's), the same batches of real digits, 120 steps of the
  lab's recipe through this project's own step (4 unrolled a call, as train.py on CPU) and
  through torch.optim.Adam: the loss at every step and the final params agree.

  Tolerances: the two frameworks' float32 kernels round differently from the first step
  (observed 6e-7 relative on the first 10 losses: the maths is the same). Adam divides each
  gradient by its own running RMS, so the rounding of weights whose gradients are near zero
  is amplified to whole steps of lr, and the runs drift apart slowly: observed 9e-4 relative
  on the losses over 120 steps, and each layer's final displacement from the start off by at
  most 12% of its length (deconv1's kernel; 0.1-6% elsewhere). Two runs that differ in their
  maths or their batches part at the first steps and by the whole displacement."""
  dataset = data.load_dataset('mnist5k')
  train = dataset.train.images.reshape(len(dataset.train.images), -1)
  rows = update.batch_schedule(0, len(train), 64, 0, WHOLE_RUN_STEPS)
  network = lab_network(seed=3)
  start = torch_port.params_from_torch(network.state_dict())
  optimizer = update.make_optimizer(1e-4, 1e-6)
  plan = update.StepPlan(4, unroll=True)
  train_steps = jax.jit(update.make_train_steps(optimizer, plan))
  state = update.TrainState(start, optimizer.init(start), jax.numpy.zeros((), 'int32'))
  ours = []
  for first in range(0, WHOLE_RUN_STEPS, plan.steps_per_call):
    state, losses = train_steps(state, train, rows[first:first + plan.steps_per_call])
    ours.extend(np.asarray(losses))

  torch_adam = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-6)
  images = torch.from_numpy(train.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
  theirs = []
  for batch_rows in rows:
    batch = images[torch.from_numpy(batch_rows).long()]
    loss = torch.nn.MSELoss()(network(batch), batch)
    torch_adam.zero_grad()
    loss.backward()
    torch_adam.step()
    theirs.append(loss.item())
  np.testing.assert_allclose(ours[:10], theirs[:10], rtol=1e-5)
  np.testing.assert_allclose(ours, theirs, rtol=3e-3)
  assert theirs[-1] < 0.5 * theirs[0]  # it did learn: the run is not a flat line
  expected = torch_port.params_from_torch(network.state_dict())
  for (path, got), want, initial in zip(jax.tree_util.tree_flatten_with_path(state.params)[0],
                                        jax.tree.leaves(expected), jax.tree.leaves(start)):
    moved = np.linalg.norm(np.asarray(want, np.float64) - initial)
    assert np.linalg.norm(np.asarray(got, np.float64) - want) < 0.25 * moved, \
        jax.tree_util.keystr(path)


@pytest.mark.parametrize('latent_dim', [2, 30])
def test_any_code_size_goes_to_pytorch_and_back(latent_dim, images):
  torch.manual_seed(0)
  network = torch_port.torch_autoencoder(latent_dim)
  params = torch_port.params_from_torch(network.state_dict())
  assert params['encoder']['fc2']['kernel'].shape == (1600, latent_dim)
  with torch.no_grad():
    expected = network(nchw(images)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(AutoEncoder(latent_dim).apply({'params': params}, images), expected,
                             rtol=1e-5, atol=1e-6)
  back = torch_port.params_to_torch(params)
  for key, value in network.state_dict().items():
    assert torch.equal(back[key], value), key
