"""The lab's PyTorch network, and its weights to and from this project's Flax params.

torch is imported inside the functions that need it, so the package runs without it.
"""
import functools
import pickle
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_ae.errors import UserError
from jax_ae.model import LATENT_DIM, init_params

# Each Flax layer, the lab's PyTorch module holding its weights (positions in the lab's
# nn.Sequential), and which side of it is a flattened (64, 7, 7) feature map, if any.
LAYERS = (
    ('encoder', 'conv1', 'encoder.0', None),
    ('encoder', 'conv2', 'encoder.3', None),
    ('encoder', 'fc1', 'encoder.7', 'in'),
    ('encoder', 'fc2', 'encoder.9', None),
    ('decoder', 'fc1', 'decoder.0', None),
    ('decoder', 'fc2', 'decoder.2', 'out'),
    ('decoder', 'deconv1', 'decoder.5', None),
    ('decoder', 'deconv2', 'decoder.7', None),
)

# PyTorch flattens the (C, H, W) = (64, 7, 7) map channel-first, Flax the (7, 7, 64) one
# channel-last: Flax feature i is PyTorch feature HWC_FROM_CHW[i].
HWC_FROM_CHW = np.arange(64 * 7 * 7).reshape(64, 7, 7).transpose(1, 2, 0).reshape(-1)
CHW_FROM_HWC = np.argsort(HWC_FROM_CHW)

# Where common checkpoint dicts keep the state_dict: torch.save({'epoch': ...,
# 'model_state_dict': model.state_dict(), ...}), Lightning's 'state_dict', others' 'model'.
CHECKPOINT_KEYS = ('model_state_dict', 'state_dict', 'model')


class TorchWeightsError(UserError):
  """PyTorch weights that are not the lab's network; str() is one line that says what to do."""


def torch_autoencoder(latent_dim=LATENT_DIM):
  """The lab's network in PyTorch (PyTorch's own initialization), NCHW: (B, 1, 28, 28) ->
  same, with a code of latent_dim (the lab's: 576).

  A Sequential of the two named halves: model.encoder and model.decoder, forward is
  decoder(encoder(x)), and the state_dict keys are the lab's ('encoder.0.weight', ...).
  """
  from collections import OrderedDict

  from torch import nn
  encoder = nn.Sequential(
      nn.Conv2d(1, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(3136, 1600), nn.ReLU(), nn.Linear(1600, latent_dim))
  decoder = nn.Sequential(
      nn.Linear(latent_dim, 1600), nn.ReLU(), nn.Linear(1600, 3136), nn.ReLU(),
      nn.Unflatten(1, (64, 7, 7)),
      nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
      nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid())
  return nn.Sequential(OrderedDict(encoder=encoder, decoder=decoder))


def params_from_torch(state_dict):
  """Flax params (the tree of model.init_params) from a state_dict of the lab's network.

  Its layers are found by their shapes, which differ from layer to layer, so the modules may
  have any names and order: the lab's nn.Sequential ('encoder.0.weight', ...), one's own
  ('conv1.weight', 'enc.0.weight', ...), DataParallel's 'module.' prefix. Anything else (a
  layer the lab's network does not have, one it has missing, a layer without a bias, two
  layers of one shape) is refused in one line. Also maps anything keyed like a state_dict,
  e.g. {name: p.grad for name, p in named_parameters()}.
  """
  prefixes = _match_layers(state_dict)
  params = {}
  for part, layer, module, flat in LAYERS:
    weight = _numpy(state_dict[f'{prefixes[module]}.weight'])
    bias = _numpy(state_dict[f'{prefixes[module]}.bias'])
    if weight.ndim == 4:
      # Conv2d (out, in, kh, kw) -> (kh, kw, in, out), and ConvTranspose2d (in, out, kh, kw)
      # -> (kh, kw, out, in), the transpose_kernel layout: the same axis permutation.
      kernel = weight.transpose(2, 3, 1, 0)
    elif flat == 'in':
      kernel = weight.T[HWC_FROM_CHW]
    elif flat == 'out':
      kernel, bias = weight.T[:, HWC_FROM_CHW], bias[HWC_FROM_CHW]
    else:
      kernel = weight.T
    params.setdefault(part, {})[layer] = {'kernel': jnp.asarray(kernel), 'bias': jnp.asarray(bias)}
  return params


def _match_layers(state_dict):
  """{lab module ('encoder.0', ...): the state_dict's module prefix holding that layer}.

  The flatten between the convolutions and the linear layers is assumed to be PyTorch's
  channel-first one (x.view(B, -1), nn.Flatten), as in the lab: weights cannot tell.
  """
  modules = {}  # prefix: {'weight': shape, 'bias': shape}, in the state_dict's order
  for key, value in state_dict.items():
    prefix, _, kind = key.rpartition('.')
    if kind not in ('weight', 'bias'):
      raise TorchWeightsError(f"this is not the lab's network: it holds '{key}', and the lab's "
                              'layers hold only a weight and a bias each')
    modules.setdefault(prefix, {})[kind] = tuple(np.shape(value))
  expected = _torch_shapes(_latent_dim(modules))
  lab = {module: (expected[f'{module}.weight'], expected[f'{module}.bias'])
         for _, _, module, _ in LAYERS}
  by_shapes = {shapes: module for module, shapes in lab.items()}  # each layer's are unique
  found = {}
  for position, (prefix, shapes) in enumerate(modules.items()):
    name = f'{prefix}.' if prefix else ''
    if 'bias' not in shapes or 'weight' not in shapes:
      has, lacks = ('weight', 'bias') if 'weight' in shapes else ('bias', 'weight')
      raise TorchWeightsError(f"this is not the lab's network: '{name}{has}' has no {lacks}, "
                              "and every layer of the lab's network has both")
    module = by_shapes.get((shapes['weight'], shapes['bias']))
    if module is None:
      hint = ''
      if position < len(LAYERS):  # likely meant as the lab's layer in that position
        near = LAYERS[position][2]
        hint = (f"; the lab's {_describe(near)}, its layer {position + 1}, has weight "
                f'{lab[near][0]}, bias {lab[near][1]}')
      raise TorchWeightsError(f"this is not the lab's network: '{name}weight' {shapes['weight']} "
                              f"with bias {shapes['bias']} is no layer of it{hint}")
    if module in found:
      raise TorchWeightsError(f"the state_dict is ambiguous: '{found[module]}' and '{prefix}' "
                              f"both have the shapes of the lab's {_describe(module)}: save the "
                              "state_dict of one model of the lab's network")
    found[module] = prefix
  for module in lab:
    if module not in found:
      raise TorchWeightsError(f"this is not the lab's network: it has no layer of the shapes of "
                              f"the lab's {_describe(module)} (weight {lab[module][0]}, bias "
                              f'{lab[module][1]})')
  return found


def _latent_dim(modules):
  """The code size of a state_dict's layers: the encoder's last Linear is (D, 1600), which
  no other layer is (fc1's is (1600, 3136)); the lab's 576 when none is."""
  sizes = {shapes.get('weight', (0, 0))[0] for shapes in modules.values()
           if len(shapes.get('weight', ())) == 2 and shapes['weight'][1] == 1600}
  sizes.discard(3136)
  return sizes.pop() if len(sizes) == 1 else LATENT_DIM


def _describe(module):
  part, layer = next((part, layer) for part, layer, name, _ in LAYERS if name == module)
  return f'{part} {layer}'


def params_to_torch(params):
  """The lab network's state_dict from Flax params: model.load_state_dict(...) takes it."""
  import torch
  state_dict = {}
  for part, layer, module, flat in LAYERS:
    kernel = np.asarray(params[part][layer]['kernel'], np.float32)
    bias = np.asarray(params[part][layer]['bias'], np.float32)
    if kernel.ndim == 4:
      weight = kernel.transpose(3, 2, 0, 1)
    elif flat == 'in':
      weight = kernel[CHW_FROM_HWC].T
    elif flat == 'out':
      weight, bias = kernel[:, CHW_FROM_HWC].T, bias[CHW_FROM_HWC]
    else:
      weight = kernel.T
    state_dict[f'{module}.weight'] = torch.tensor(weight)  # a copy, contiguous
    state_dict[f'{module}.bias'] = torch.tensor(bias)
  return state_dict


def load_torch_weights(path):
  """Flax params from a PyTorch file of the lab's network (see params_from_torch for the
  names it accepts): torch.save(model.state_dict(), path), or a checkpoint dict holding that
  under CHECKPOINT_KEYS, e.g. torch.save({'epoch': ..., 'model_state_dict': ...}, path)."""
  try:
    import torch
  except ImportError as error:
    raise TorchWeightsError(f'reading {path} needs PyTorch: pip install torch') from error
  try:
    saved = torch.load(path, map_location='cpu', weights_only=True)
  except OSError as error:  # missing, a folder, unreadable
    raise TorchWeightsError(f'cannot read {path}: {error.strerror}') from error
  except pickle.UnpicklingError as error:  # weights_only refuses pickled classes and junk
    raise TorchWeightsError(f'{path} is not a file of tensors: if it holds a whole model '
                            '(torch.save(model, path)), save torch.save(model.state_dict(), '
                            'path) instead') from error
  except Exception as error:  # truncated or not written by torch.save
    raise TorchWeightsError(f'cannot read {path} as a PyTorch file '
                            f'({type(error).__name__}): save it with torch.save') from error
  if not isinstance(saved, Mapping):
    raise TorchWeightsError(f'{path} holds a {type(saved).__name__}, not a state_dict: save '
                            'torch.save(model.state_dict(), path)')
  key = next((key for key in CHECKPOINT_KEYS if isinstance(saved.get(key), Mapping)), None)
  if key is not None:
    saved = saved[key]
  elif any(isinstance(value, Mapping) for value in saved.values()):
    raise TorchWeightsError(f'{path} holds a dict of {", ".join(map(repr, saved))}, and none '
                            f'of {", ".join(map(repr, CHECKPOINT_KEYS))}: save '
                            'torch.save(model.state_dict(), path)')
  return params_from_torch(saved)


@functools.cache
def _torch_shapes(latent_dim):
  """{state_dict key: shape} of the lab's network, from this project's parameter tree."""
  shapes = jax.eval_shape(functools.partial(init_params, latent_dim=latent_dim),
                          jax.random.key(0))
  expected = {}
  for part, layer, module, _ in LAYERS:
    kernel = shapes[part][layer]['kernel'].shape
    expected[f'{module}.weight'] = (kernel[::-1] if len(kernel) == 2 else
                                    (kernel[3], kernel[2], kernel[0], kernel[1]))
    expected[f'{module}.bias'] = shapes[part][layer]['bias'].shape
  return expected


def _numpy(value):
  if hasattr(value, 'detach'):  # a torch.Tensor, of any device or dtype (bfloat16 too)
    value = value.detach().cpu().float()
  return np.asarray(value, np.float32)
