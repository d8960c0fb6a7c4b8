"""python -m jax_ae train|analyze [flags]: the command lines of jax_ae/cli.py, for a notebook's
`!python -m jax_ae train ...` or an installed package without its clone."""
import sys

from jax_ae import cli

if __name__ == '__main__':
  sys.exit(cli.module_main(sys.argv[1:]))
