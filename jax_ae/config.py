"""The run's configuration: the lab's recipe as defaults, one command-line flag per field."""
import dataclasses
import json
import time
from pathlib import Path

# On the 4,000 bundled training digits the lab's 10 epochs are only 625 updates, which leave
# blurry reconstructions; 40 epochs (2,500 updates) show what the model can do.
SMALL_DATA_EPOCHS = {'mnist5k': 40}
LAB_EPOCHS = 10


RUNS_DIR = Path('runs')


class ConfigError(ValueError):
  """A bad setting; str() is one line that says what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  data: str = 'mnist'
  epochs: int | None = None  # None: the lab's 10, or SMALL_DATA_EPOCHS for a small dataset
  steps: int | None = None  # when set, overrides epochs
  batch_size: int = 64
  lr: float = 1e-4
  weight_decay: float = 1e-6  # coupled L2, as PyTorch's Adam applies it
  seed: int = 0
  eval_every: int | None = None  # steps between test evaluations and checkpoints; None: each epoch
  # Updates per jitted call; None: 4 on CPU, where they are unrolled and compile time grows
  # with them, and 64 on accelerators, where they run in a lax.scan.
  steps_per_dispatch: int | None = None
  devices: str = 'all'  # 'all' or how many of jax.devices() share each batch

  def __post_init__(self):
    for name in ('epochs', 'steps', 'batch_size', 'eval_every', 'steps_per_dispatch'):
      value = getattr(self, name)
      if value is not None and value <= 0:
        raise ConfigError(f'--{name.replace("_", "-")} must be a positive integer, got {value}')
    if not self.lr > 0:
      raise ConfigError(f'--lr must be positive, got {self.lr}')
    if not self.weight_decay >= 0:
      raise ConfigError(f'--weight-decay must be zero or positive, got {self.weight_decay}')

  def dispatch_steps(self, backend):
    return self.steps_per_dispatch or (4 if backend == 'cpu' else 64)

  def total_steps(self, dataset_name, num_train):
    if self.steps is not None:
      return self.steps
    epochs = self.epochs or SMALL_DATA_EPOCHS.get(dataset_name, LAB_EPOCHS)
    return epochs * (num_train // self.batch_size)


# Fields that change the trajectory of a run: a resume must agree on them.
TRAJECTORY_FIELDS = ('data', 'batch_size', 'lr', 'weight_decay', 'seed')


def save_config(config, path):
  Path(path).write_text(json.dumps(dataclasses.asdict(config), indent=2) + '\n')


def load_config(path):
  return Config(**json.loads(Path(path).read_text()))


def default_workdir(data):
  slug = ''.join(c if c.isalnum() else '-' for c in data.split('/')[-1] or data).strip('-')
  return RUNS_DIR / f'{slug}-{time.strftime("%Y%m%d-%H%M%S")}'


def latest_workdir():
  """The most recently written run under runs/, or None."""
  runs = [path.parent for path in RUNS_DIR.glob('*/config.json')]
  return max(runs, key=lambda run: (run / 'config.json').stat().st_mtime, default=None)
