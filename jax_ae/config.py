"""The run's configuration: the lab's recipe as defaults, one command-line flag per field."""
import dataclasses
import typing

import numpy as np

from jax_ae.errors import ConfigError
from jax_ae.model import INITS, LATENT_DIM

# On the 4,000 bundled training digits the lab's 10 epochs are only 625 updates, which leave
# blurry reconstructions; 40 epochs (2,500 updates) show what the model can do.
SMALL_DATA_EPOCHS = {'mnist5k': 40}
LAB_EPOCHS = 10
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the step computes in float32


_KIND_NAMES = {int: 'an integer', float: 'a number', str: 'a string', type(None): 'unset'}


@dataclasses.dataclass(frozen=True)
class Config:
  data: str = 'mnist'
  epochs: int | None = None  # None: the lab's 10, or SMALL_DATA_EPOCHS for a small dataset
  steps: int | None = None  # when set, overrides epochs
  batch_size: int = 64
  lr: float = 1e-4
  weight_decay: float = 1e-6  # coupled L2, as PyTorch's Adam applies it
  seed: int = 0
  latent_dim: int = LATENT_DIM  # the code's size: the encoder's last Dense, the decoder's first
  init: str = 'torch'  # 'torch': PyTorch's initialization, the lab's; 'flax': Flax's defaults
  eval_every: int | None = None  # steps between test evaluations and checkpoints; None: each epoch
  steps_per_dispatch: int | None = None  # updates per compiled call; None: the backend's default
  devices: str = 'auto'  # 'auto', 'all' or how many of jax.devices() share each batch

  def __post_init__(self):
    for field in dataclasses.fields(self):  # a config.json or a caller may hold any JSON value
      value, kinds = getattr(self, field.name), typing.get_args(field.type) or (field.type,)
      numeric = float in kinds and isinstance(value, int)  # JSON writes 1.0 as 1
      if isinstance(value, bool) or not (numeric or isinstance(value, kinds)):
        expected = ' or '.join(_KIND_NAMES[kind] for kind in kinds)
        raise ConfigError(f'--{field.name.replace("_", "-")} must be {expected}, got {value!r}')
    for name in ('epochs', 'steps', 'batch_size', 'latent_dim', 'eval_every',
                 'steps_per_dispatch'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ConfigError(f'--{name.replace("_", "-")} must be a positive integer, got {value}')
    if not 0 < self.lr <= FLOAT32_MAX:  # also refuses nan and inf
      raise ConfigError(f'--lr must be a positive finite number, got {self.lr}')
    if not 0 <= self.weight_decay <= FLOAT32_MAX:
      raise ConfigError(f'--weight-decay must be zero or a positive finite number, got '
                        f'{self.weight_decay}')
    if self.init not in INITS:
      raise ConfigError(f'--init must be one of {", ".join(INITS)}, got {self.init!r}')
    if not 0 <= self.seed < 2**32:  # numpy's seeds are unsigned
      raise ConfigError(f'--seed must be an integer from 0 to {2**32 - 1}, got {self.seed}')

  def steps_per_epoch(self, num_train):
    return num_train // self.batch_size  # the last partial batch is dropped

  def total_steps(self, dataset_name, num_train):
    if self.steps is not None:
      return self.steps
    epochs = self.epochs or SMALL_DATA_EPOCHS.get(dataset_name, LAB_EPOCHS)
    return epochs * self.steps_per_epoch(num_train)

  def eval_interval(self, num_train):
    return self.eval_every or self.steps_per_epoch(num_train)


# Fields that change the trajectory of a run, so a resume must agree on them. Evaluation
# points are among them: they set the boundaries of the compiled calls (update.call_length).
# The steps per call are not, though a step's rounding depends on the call it runs in: they
# depend on the backend, and moving a run to another machine is what checkpoints are for (a
# resume with other steps per call warns that it will not be bit for bit).
TRAJECTORY_FIELDS = ('data', 'batch_size', 'lr', 'weight_decay', 'seed', 'latent_dim', 'init',
                     'eval_every')
