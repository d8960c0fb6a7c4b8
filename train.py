"""Train the lab's convolutional autoencoder: python train.py [--steps N] [--data SOURCE] ..."""
import argparse
import dataclasses
import os
import sys
import traceback

import jax
from absl import logging as absl_logging

from jax_ae import loop, parallel, rundir, runtime
from jax_ae.config import Config, ConfigError
from jax_ae.errors import UserError

FLAG_HELP = {
    'data': "mnist (TFDS MNIST; without TFDS, MNIST downloaded once into ~/.cache/jax-ae; "
            "offline, the 5,000 bundled digits), "
            "mnist5k, tfds:<name> (e.g. tfds:fashion_mnist) or idx:<dir> with the four "
            "MNIST-format IDX files (e.g. idx:/usr/share/datasets/fashion-mnist)",
    'epochs': 'passes over the training split (default: the lab\'s 10; 40 on mnist5k)',
    'steps': 'number of updates; overrides --epochs',
    'batch_size': 'images per update (the lab: 64)',
    'lr': 'Adam learning rate (the lab: 1e-4)',
    'weight_decay': "L2 added to the gradient, as PyTorch's Adam(weight_decay=) (the lab: 1e-6)",
    'seed': 'seeds the initial weights and the order of the batches',
    'latent_dim': "size of the code between encoder and decoder (the lab's: 576 = 64 x 3 x 3)",
    'init': "initial weights: torch (PyTorch's default initialization, the lab's) or flax "
            "(Flax's layer defaults)",
    'eval_every': 'updates between test evaluations and checkpoints (default: one epoch)',
    'steps_per_dispatch': 'updates per compiled call (default: 4 on CPU, unrolled; 64 on GPU '
                          'and TPU, in a lax.scan)',
    'devices': "'auto' (one device; every device of a multi-process job), 'all', or N: split "
               'each batch over that many devices (data parallel); the batch size must divide '
               'by it',
}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__)
  for field in dataclasses.fields(Config):
    kind = {'data': str, 'devices': str, 'init': str, 'lr': float, 'weight_decay': float}.get(field.name, int)
    parser.add_argument('--' + field.name.replace('_', '-'), type=kind,
                        default=argparse.SUPPRESS, help=FLAG_HELP[field.name])
  parser.add_argument('--workdir', help='where checkpoints, config.json and metrics.jsonl go '
                      '(default: runs/<data>-<time>; with --resume, the latest run)')
  parser.add_argument('--resume', action='store_true',
                      help='continue the run in --workdir from its last checkpoint')
  return parser.parse_args(argv)


def main(argv=None):
  flags = vars(parse_args(argv))
  absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's and TFDS's routine warnings
  workdir, resume = flags.pop('workdir'), flags.pop('resume')
  try:
    if resume and workdir is None:
      workdir = rundir.latest_workdir()
      if workdir is None:
        raise ConfigError('--resume found no run under runs/: pass --workdir')
    config = rundir.resume_config(workdir, **flags) if resume else Config(**flags)
    workdir = workdir or rundir.default_workdir(config.data)
    parallel.initialize_distributed()  # before JAX starts its backends
    warning = runtime.unused_accelerator_warning()
    if warning:
      print(warning, file=sys.stderr)
    print(f'training in {workdir}', file=sys.stderr)
    loop.train(config, workdir, resume)
  except UserError as error:
    return _end(2, f'error: {error}')
  except loop.Stopped as stop:
    return _end(128 + stop.signum, str(stop))
  except KeyboardInterrupt:  # before the loop took over the signals
    return _end(130, 'interrupted before training started: nothing was written')
  except BaseException:
    if jax.process_count() > 1:
      traceback.print_exc()
      _end(1, 'error: a bug ended this process of the job (see the traceback above)')
    raise
  return 0


def _end(code, line):
  print(line, file=sys.stderr)
  if jax.process_count() > 1:
    # JAX's exit waits for every process of the job at a barrier, and one that stopped
    # never comes: leave at once.
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
  return code


if __name__ == '__main__':
  # Before JAX starts: XLA reads XLA_FLAGS once. In main() they would reach a caller's process.
  runtime.set_cpu_xla_flags()
  runtime.enable_compilation_cache()
  sys.exit(main())
