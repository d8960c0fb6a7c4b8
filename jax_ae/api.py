"""The public API, `import jax_ae`: train a run, analyse it, load its model, apply the model to
arrays, and move the model to and from PyTorch.

    import jax_ae
    jax_ae.train(jax_ae.Config(data='mnist5k', steps=500), 'runs/demo')
    params = jax_ae.load_model('runs/demo')
    codes = jax_ae.encode(params, images)   # uint8 0-255 or floats in [0, 1]
    jax_ae.export_torch('runs/demo', 'model.pt')

train.py and analyze.py are the same functions on the command line. The array functions check
what they are given (jax_ae/images.py) and raise one ImageError, a UserError, for anything
that is not images or codes of this model.
"""
import contextlib
import logging
from pathlib import Path

import numpy as np

from jax_ae import images as images_module
from jax_ae import inference, runtime
from jax_ae.errors import UserError, first_line


def train(config, workdir, resume=False):
  """Trains the run `config` describes in `workdir` (a new folder, or with resume=True one
  that holds a run to continue from its last checkpoint); returns the final params.

  As train.py: the config, metrics.jsonl (and TensorBoard events, with tensorboardX) and the
  checkpoints go into workdir; JAX's persistent compilation cache is on, so a second run of
  the same shapes skips compiling (JAX_AE_COMPILATION_CACHE=0 turns it off). A finished run
  resumed returns at once; to train it on, resume with a larger config.steps or config.epochs.
  Raises a UserError for anything a user can fix.
  """
  from jax_ae import loop, parallel  # the training stack, imported when one trains
  runtime.enable_compilation_cache()
  with _quiet_checkpoints():
    state = loop.train(config, workdir, resume)
  return parallel.local_copy(state.params)


def analyze(workdir, out=None, compare=(), progress=print):
  """The latent-space study of a run (analyze.py --workdir): restores its final checkpoint,
  measures it on the run's dataset and writes the figures, metrics.json, codes.npz and
  report.md into out (default: workdir/analysis). Returns that folder, a Path.

  compare: other runs' workdirs, drawn beside this one in compression.png. progress: called
  with a line as each stage starts (None: silent); a study takes about two minutes on 2 CPU
  cores.
  """
  from jax_ae import study  # scikit-learn, matplotlib: imported when one analyses
  runtime.enable_compilation_cache()
  with _quiet_checkpoints():
    return Path(study.analyze_run(workdir, out, compare=compare, progress=progress))


def load_model(workdir, step=None):
  """The params of a run's final checkpoint (or of `step`), on this host's first device:
  what encode, decode, reconstruct and export_torch take."""
  from jax_ae import rundir
  run = rundir.open_for_reading(workdir)
  try:
    with _quiet_checkpoints():
      params, _ = run.load_params(step)
  finally:
    run.close()
  return params


def encode(params, images):
  """The latent codes of images, float32 (N, D).

  images: (N, 28, 28), (N, 28, 28, 1) or (N, 784), as uint8 levels 0-255 or floats in
  [0, 1] (numpy, JAX or CPU torch arrays); anything else raises ImageError.
  """
  return inference.encode(params, images_module.checked(images))


def decode(params, codes):
  """Images in [0, 1] from latent codes (N, D): float32 (N, 28, 28, 1)."""
  return inference.decode(params, images_module.checked_codes(codes, _latent_dim(params)))


def reconstruct(params, images):
  """The model's reconstructions of images (as encode takes them): float32 in [0, 1], in the
  shape the images came in."""
  array = images_module.checked(images)
  shape = tuple(getattr(images, 'shape', None) or np.shape(images))  # torch tensors too
  return inference.reconstruct(params, array).reshape(shape)


def export_torch(workdir, path, step=None):
  """Writes a run's final params (or those of `step`) as a PyTorch state_dict file of the
  lab's network; returns the file's Path. In PyTorch:

      model = jax_ae.torch_autoencoder(latent_dim)   # or the lab's own nn.Module
      model.load_state_dict(torch.load(path))

  latent_dim is the run's (config.json; the lab's 576).
  """
  from jax_ae import torch_port
  torch = _torch(f'writing {path}')
  state_dict = torch_port.params_to_torch(load_model(workdir, step))
  path = Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
  except (OSError, RuntimeError) as error:  # torch reports a missing folder as RuntimeError
    raise ExportError(f'cannot write {path} ({first_line(error)}): choose a path you can '
                      'write to') from None
  return path


def import_torch(path):
  """Params from a PyTorch file of the lab's network, for encode, decode and reconstruct:
  torch.save(model.state_dict(), path), or a checkpoint dict holding it (any module names:
  see torch_port.params_from_torch)."""
  from jax_ae import torch_port
  return torch_port.load_torch_weights(path)


def torch_autoencoder(latent_dim=None):
  """The lab's network as a PyTorch nn.Module (latent_dim: the lab's 576 when None), whose
  state_dict export_torch writes."""
  from jax_ae import model, torch_port
  _torch('the PyTorch network')
  return torch_port.torch_autoencoder(latent_dim or model.LATENT_DIM)


class ExportError(UserError):
  """A model that cannot be written where asked."""


def _latent_dim(params):
  try:
    return int(params['encoder']['fc2']['bias'].shape[0])
  except (KeyError, TypeError, AttributeError):
    raise images_module.ImageError("params are not this model's: pass what load_model or "
                                   'import_torch returns') from None


def _torch(needed_for):
  try:
    import torch
  except ImportError:
    raise ExportError(f'{needed_for} needs PyTorch: pip install torch') from None
  return torch


@contextlib.contextmanager
def _quiet_checkpoints():
  """Without Orbax's routine warnings on restore ('Metadata file does not exist': the optional
  metadata a checkpoint is written without), which tell a user nothing to do."""
  logger = logging.getLogger('absl')  # Orbax logs through absl
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(level)
