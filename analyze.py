"""Study a run's latent space, or export its model to PyTorch: python analyze.py --help.

The command line is jax_ae/cli.py, so that the installed jax-ae-analyze and `python -m jax_ae
analyze` are this same command; the study itself is jax_ae/study.py.
"""
import sys

from jax_ae import cli

main = cli.analyze_main  # main(argv) -> the exit code

if __name__ == '__main__':
  sys.exit(cli.run_script('analyze'))
