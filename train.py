"""Train the lab's convolutional autoencoder: python train.py --help.

The command line is jax_ae/cli.py, so that the installed jax-ae-train and `python -m jax_ae
train` are this same command.
"""
import sys

from jax_ae import cli

main = cli.train_main  # main(argv) -> the exit code

if __name__ == '__main__':
  sys.exit(cli.run_script('train'))
