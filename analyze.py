"""Study a run's latent space: python analyze.py [--workdir RUN] [--out DIR]

Restores the run's final checkpoint, measures its codes against the raw pixels and the
controls (the untrained network, PCA of the pixels) on the run's dataset and writes into
RUN/analysis/ (or DIR): the figures, metrics.json (every number, and how each was measured),
codes.npz (the test codes and their 2-D maps) and report.md.
The study itself is jax_ae/study.py.
"""
import argparse
import sys
import time
from pathlib import Path

from absl import logging as absl_logging

from jax_ae import rundir, study, torch_port
from jax_ae.config import ConfigError
from jax_ae.errors import UserError


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', help='the train.py run to analyse (default: the latest '
                      'under runs/)')
  parser.add_argument('--out', help='where the figures, metrics.json, codes.npz and report.md '
                      'go (default: WORKDIR/analysis)')
  parser.add_argument('--torch-weights', metavar='FILE',
                      help="analyse a PyTorch model of the lab's network instead of a run: its "
                      'torch.save(model.state_dict(), FILE), or a checkpoint dict holding it; '
                      'needs --out')
  parser.add_argument('--compare', nargs='+', default=(), metavar='RUN',
                      help='other train.py runs to draw in compression.png beside this one '
                      '(e.g. the same recipe at other --latent-dim)')
  parser.add_argument('--data', default='mnist',
                      help='with --torch-weights: the dataset whose test split to encode '
                      '(default: mnist; see train.py --help)')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's restore warnings: nothing to act on
  start = time.perf_counter()
  try:
    if args.torch_weights:
      if not args.out:
        raise ConfigError('--torch-weights needs --out: where to write the analysis')
      out = Path(args.out)
      params = torch_port.load_torch_weights(args.torch_weights)
      study.analyze(params, args.data, {'torch_weights': str(args.torch_weights)}, out)
    else:
      workdir = args.workdir or rundir.latest_workdir()
      if workdir is None:
        raise ConfigError('found no run under runs/: pass the --workdir of a train.py run')
      out = study.analyze_run(workdir, args.out, compare=args.compare)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'wrote {out} in {time.perf_counter() - start:.0f} s', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
