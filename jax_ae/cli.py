"""The command lines: train and analyze, as `python train.py` and `python analyze.py` in a
clone, `jax-ae-train` and `jax-ae-analyze` once installed, and `python -m jax_ae train|analyze`.

Each main takes argv and returns the exit code: 0; 2 for a UserError, in one line on stderr
that says what to do; 128 + N after signal N. Any other exception is a bug and keeps its
traceback. The work itself is the library's: loop.train, and jax_ae.analyze (jax_ae/api.py).
"""
import argparse
import dataclasses
import os
import shlex
import sys
import time
import traceback

import jax
from absl import logging as absl_logging

from jax_ae import api, data, loop, parallel, rundir, runtime, signals, update
from jax_ae.config import LAB_EPOCHS, SMALL_DATA_EPOCHS, Config, ConfigError
from jax_ae.errors import UserError

# How the user started the command, '{}' the command's name: for --help's usage and examples,
# and for the command the output says to run next.
SCRIPT, MODULE, INSTALLED = 'python {}.py', 'python -m jax_ae {}', 'jax-ae-{}'

TRAIN_DESCRIPTION = """Train the lab's convolutional autoencoder.

Writes into the workdir: config.json (the settings, resolved), metrics.jsonl (the losses and
test MSEs, with wall-clock times; TensorBoard events too with pip install 'jax-ae[tensorboard]')
and checkpoints/. Ctrl-C stops after a checkpoint; --resume continues, from any directory."""

TRAIN_EXAMPLES = """examples:
  # the lab's recipe on MNIST (offline: on the 5,000 bundled digits)
  {train}
  # a short run; then train it on to 600 steps
  {train} --steps 300 --workdir runs/quick
  {train} --workdir runs/quick --resume --steps 600
  # Fashion-MNIST with a smaller code
  {train} --data tfds:fashion_mnist --latent-dim 32
  # then study its latent space
  {analyze} --workdir runs/quick"""

FLAG_HELP = {
    'data': "mnist (TFDS MNIST; without TFDS, MNIST downloaded once into ~/.cache/jax-ae; "
            "offline, the 5,000 bundled digits), "
            "mnist5k, tfds:<name> (e.g. tfds:fashion_mnist) or idx:<dir> with the four "
            "MNIST-format IDX files (e.g. idx:/usr/share/datasets/fashion-mnist)",
    'epochs': 'passes over the training split',
    'steps': 'number of updates; overrides --epochs',
    'batch_size': 'images per update',
    'lr': 'Adam learning rate',
    'weight_decay': "L2 added to the gradient, as PyTorch's Adam(weight_decay=)",
    'seed': 'seeds the initial weights and the order of the batches',
    'latent_dim': 'size of the code between encoder and decoder',
    'init': "initial weights: torch (PyTorch's default initialization) or flax (Flax's layer "
            'defaults)',
    'eval_every': 'updates between test evaluations and checkpoints',
    'steps_per_dispatch': 'updates per compiled call',
    'devices': "'auto' (one device; every device of a multi-process job), 'all', or N: split "
               'each batch over that many devices (data parallel); the batch size must divide '
               'by it',
}
LAB_FIELDS = ('batch_size', 'lr', 'weight_decay', 'latent_dim', 'init')  # "(default: ..., the lab's)"
DEFAULTS = {  # what a default of None means
    'epochs': f"{LAB_EPOCHS}, the lab's; " + ', '.join(
        f'{epochs} on {name}' for name, epochs in SMALL_DATA_EPOCHS.items()),
    'steps': 'none: --epochs decides',
    'eval_every': 'one epoch',
    'steps_per_dispatch': f'{update.CPU_STEPS_PER_CALL} on CPU, unrolled; '
                          f'{update.ACCELERATOR_STEPS_PER_CALL} on GPU and TPU, in a lax.scan',
}
FLAG_TYPES = {'data': str, 'devices': str, 'init': str, 'lr': float, 'weight_decay': float}

ANALYZE_DESCRIPTION = """Study a run's latent space, or export its model to PyTorch.

Restores the run's final checkpoint, measures its codes against the raw pixels and the
controls (the untrained network, PCA of the pixels) on the run's dataset and writes into
RUN/analysis/ (or DIR): the figures, metrics.json (every number, and how each was measured),
codes.npz (the test codes and their 2-D maps) and report.md. About two minutes on 2 CPU
cores. The study itself is jax_ae/study.py."""

ANALYZE_EXAMPLES = """examples:
  # the latest run under runs/, into its analysis/ folder
  {analyze}
  {analyze} --workdir runs/quick --out /tmp/study
  # three code sizes side by side in compression.png
  {analyze} --workdir runs/latent-16 --compare runs/latent-32 runs/latent-64
  # the model for PyTorch; there: model = jax_ae.torch_autoencoder(576) (the run's
  # --latent-dim), or the lab's own network; model.load_state_dict(torch.load('model.pt'))
  {analyze} --workdir runs/quick --export-torch model.pt
  # the study of a model trained in PyTorch
  {analyze} --torch-weights lab.pt --data mnist --out results/lab"""


def train_parser(command=SCRIPT):
  parser = argparse.ArgumentParser(
      prog=command.format('train'), description=TRAIN_DESCRIPTION,
      epilog=TRAIN_EXAMPLES.format(train=command.format('train'),
                                   analyze=command.format('analyze')),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  for field in dataclasses.fields(Config):
    default = DEFAULTS.get(field.name, field.default)
    if field.name in LAB_FIELDS:
      default = f"{default}, the lab's"
    # No default in the namespace: a resume keeps the run's value of every flag not given.
    parser.add_argument('--' + field.name.replace('_', '-'), type=FLAG_TYPES.get(field.name, int),
                        default=argparse.SUPPRESS,
                        help=f'{FLAG_HELP[field.name]} (default: {default})')
  parser.add_argument('--workdir', help='where checkpoints, config.json and metrics.jsonl go '
                      '(default: runs/<data>-<time>, named after the data trained on; with '
                      '--resume, the latest run under runs/)')
  parser.add_argument('--resume', action='store_true',
                      help="continue the run in --workdir from its last checkpoint; flags not "
                      "given keep the run's values (default: off, a new run)")
  return parser


def train_main(argv=None, command=SCRIPT):
  flags = vars(train_parser(command).parse_args(argv))
  absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's and TFDS's routine warnings
  workdir, resume = flags.pop('workdir'), flags.pop('resume')
  try:
    if resume and workdir is None:
      workdir = rundir.latest_workdir()
      if workdir is None:
        raise ConfigError('--resume found no run under runs/: pass --workdir')
    config = rundir.resume_config(workdir, **flags) if resume else Config(**flags)
    parallel.initialize_distributed()  # before JAX starts its backends
    warning = runtime.unused_accelerator_warning()
    if warning:
      print(warning, file=sys.stderr)
    dataset = None
    if workdir is None:  # named after the data it resolves to: mnist may become mnist5k
      dataset = data.load_dataset(config.data)
      workdir = rundir.default_workdir(dataset.name)
    if jax.process_index() == 0:
      print(f'training in {workdir}', file=sys.stderr)
    loop.train(config, workdir, resume, dataset=dataset)
  except UserError as error:
    return _end(2, f'error: {error}')
  except signals.Stopped as stop:
    return _end(128 + stop.signum, str(stop))
  except KeyboardInterrupt:  # before the loop took over the signals
    return _end(130, 'interrupted before training started: nothing was written')
  except BaseException:
    if parallel.several_processes():
      traceback.print_exc()
      _end(1, 'error: a bug ended this process of the job (see the traceback above)')
    raise
  if jax.process_index() == 0:
    print(_what_next(workdir, command), file=sys.stderr)
  return 0


def _what_next(workdir, command):
  """Where the model is, and the commands that go on from it."""
  step = max(rundir.open_for_reading(workdir).checkpoint_steps())
  quoted = shlex.quote(str(workdir))
  return (f'done: the checkpoint of step {step} is in {workdir}/checkpoints/{step}\n'
          f'next, its latent-space study: {command.format("analyze")} --workdir {quoted}\n'
          f'or train on: {command.format("train")} --workdir {quoted} --resume --steps '
          f'{2 * step}')


def _end(code, line):
  print(line, file=sys.stderr)
  if parallel.several_processes():
    # JAX's exit waits for every process of the job at a barrier, and one that stopped
    # never comes: leave at once.
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
  return code


def analyze_parser(command=SCRIPT):
  parser = argparse.ArgumentParser(
      prog=command.format('analyze'), description=ANALYZE_DESCRIPTION,
      epilog=ANALYZE_EXAMPLES.format(analyze=command.format('analyze')),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', help='the run to analyse, the --workdir it trained in '
                      '(default: the latest under runs/)')
  parser.add_argument('--out', help='where the figures, metrics.json, codes.npz and report.md '
                      'go (default: WORKDIR/analysis)')
  parser.add_argument('--export-torch', metavar='FILE',
                      help="instead of the study: write the run's model into FILE as the "
                      "state_dict of the lab's PyTorch network (default: none, the study)")
  parser.add_argument('--torch-weights', metavar='FILE',
                      help="analyse a PyTorch model of the lab's network instead of a run: its "
                      'torch.save(model.state_dict(), FILE), or a checkpoint dict holding it; '
                      'needs --out (default: none, the run in --workdir)')
  parser.add_argument('--compare', nargs='+', default=(), metavar='RUN',
                      help='other runs to draw in compression.png beside this one (e.g. the '
                      'same recipe at other --latent-dim) (default: none)')
  parser.add_argument('--data', default='mnist',
                      help='with --torch-weights: the dataset whose test split to encode, as '
                      'train --data takes it (default: mnist)')
  return parser


def analyze_main(argv=None, command=SCRIPT):
  args = analyze_parser(command).parse_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's restore warnings: nothing to act on
  start = time.perf_counter()

  def progress(line):
    print(f'[{time.perf_counter() - start:4.0f} s] {line}', file=sys.stderr, flush=True)

  try:
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
      raise ConfigError(f'--out {args.out} is a file: name a folder for the analysis')
    if args.torch_weights:
      if args.export_torch:
        raise ConfigError('--export-torch writes a run\'s model, and --torch-weights is '
                          'already PyTorch\'s: pass one of them')
      if not args.out:
        raise ConfigError('--torch-weights needs --out: where to write the analysis')
      out = _analyze_torch_weights(args, progress)
    else:
      workdir = args.workdir or rundir.latest_workdir()
      if workdir is None:
        raise ConfigError('found no run under runs/: pass the --workdir of a '
                          f'{command.format("train")} run')
      if args.export_torch:
        return _export(workdir, args.export_torch)
      out = api.analyze(workdir, args.out, compare=args.compare, progress=progress)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'wrote {out} in {time.perf_counter() - start:.0f} s: start with '
        f'{os.path.join(out, "report.md")}', file=sys.stderr)
  return 0


def _analyze_torch_weights(args, progress):
  import numpy as np

  from jax_ae import study
  params = api.import_torch(args.torch_weights)
  if not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params)):
    raise ConfigError(f'{args.torch_weights} holds NaN or infinite weights: analyse a model '
                      'saved before its training diverged')
  study.analyze(params, args.data, {'torch_weights': str(args.torch_weights)}, args.out,
                progress=progress)
  return args.out


def _export(workdir, path):
  latent_dim = rundir.open_for_reading(workdir).config.latent_dim
  path = api.export_torch(workdir, path)
  print(f"wrote {path}: the run's final model as the state_dict of the lab's PyTorch network. "
        f'In PyTorch: model = jax_ae.torch_autoencoder({latent_dim}) (or the lab\'s own '
        f'network); model.load_state_dict(torch.load({str(path)!r}))', file=sys.stderr)
  return 0


def _start():
  """Before JAX starts: XLA reads XLA_FLAGS once. In a main() they would reach a caller's
  process; here the process is the command's."""
  runtime.set_cpu_xla_flags()
  runtime.enable_compilation_cache()


def run_script(name):
  """`python train.py`, `python analyze.py`: the process's whole life."""
  _start()
  return COMMANDS[name](None, SCRIPT)


def train_command():
  """The jax-ae-train console script."""
  _start()
  sys.exit(train_main(None, INSTALLED))


def analyze_command():
  """The jax-ae-analyze console script."""
  _start()
  sys.exit(analyze_main(None, INSTALLED))


def module_main(argv):
  """python -m jax_ae train|analyze [flags]."""
  usage = f'usage: python -m jax_ae {{{",".join(COMMANDS)}}} [--help | flags]'
  if not argv or argv[0] not in COMMANDS:
    if argv and argv[0] in ('-h', '--help'):
      print(usage)
      return 0
    print(f'{usage}\nerror: name a command: {" or ".join(COMMANDS)}', file=sys.stderr)
    return 2
  _start()
  return COMMANDS[argv[0]](argv[1:], MODULE)


COMMANDS = {'train': train_main, 'analyze': analyze_main}
