"""The lab's convolutional autoencoder on MNIST, in JAX, and a measured study of its latent space.

The public API (jax_ae/api.py), what train.py, analyze.py and the notebook use:
  jax_ae.train(config, workdir, resume=False) -> params     jax_ae.Config: the run's settings
  jax_ae.analyze(workdir, out=None) -> the folder written
  jax_ae.load_model(workdir, step=None) -> params
  jax_ae.encode(params, images), decode(params, codes), reconstruct(params, images)
  jax_ae.export_torch(workdir, path), import_torch(path), torch_autoencoder(latent_dim)
  jax_ae.UserError: the base of every error a user can fix (ImageError for bad arrays;
    jax_ae/errors.py holds it, ConfigError, DataError and the first-line helper)

Modules, one concern each:
  api        the public API above
  cli        the command lines: train.py, analyze.py, jax-ae-train, python -m jax_ae
  images     what an image is: uint8 0-255 or floats in [0, 1]; the one /255; the input check
  model      the lab's network in Flax Linen
  data       MNIST-like datasets as numpy arrays
  download   MNIST's IDX files, downloaded once and checked
  update     the train state, the optimizer, the jitted steps and how a call runs them
  dispatch   a Config's optimizer, initial state and compiled calls: the one builder
  loop       the host loop: schedule, call, check, evaluate and checkpoint
  signals    stopping cleanly on SIGINT or SIGTERM, and the command that resumes
  rundir     a run directory: its config, metrics log, checkpoints and lock
  tensorboard_log  the metrics log as TensorBoard events, with tensorboardX
  parallel   the device mesh, the distributed runtime and the job's processes
  runtime    XLA options, the compilation cache, what the backend is
  inference  encode, decode, reconstruct and per-image errors over whole splits
  study      the latent-space study of a model: every number, figure and file it writes
  analysis   its measures (scikit-learn), pure functions over arrays
  plots      its figures
  report     its report.md, written from the numbers
  torch_port the lab's PyTorch network and weight conversion

Importing the package changes no environment variable and no JAX setting, and imports
neither JAX nor the study's libraries: the API's names load on first use.
"""
import importlib

_API = {'train': 'api', 'analyze': 'api', 'load_model': 'api', 'encode': 'api', 'decode': 'api',
        'reconstruct': 'api', 'export_torch': 'api', 'import_torch': 'api',
        'torch_autoencoder': 'api', 'Config': 'config', 'UserError': 'errors',
        'ImageError': 'images'}
__all__ = sorted(_API)


def __getattr__(name):  # PEP 562: `from jax_ae import config` stays light
  if name not in _API:
    raise AttributeError(f"module 'jax_ae' has no attribute {name!r}")
  return getattr(importlib.import_module(f'jax_ae.{_API[name]}'), name)


def __dir__():
  return sorted({*globals(), *__all__})
