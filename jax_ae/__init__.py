"""The lab's convolutional autoencoder on MNIST, in JAX, and a measured study of its latent space.

Modules, one concern each:
  model      the lab's network in Flax Linen
  data       MNIST-like datasets as numpy arrays
  download   MNIST's IDX files, downloaded once and checked
  update     the train state, the optimizer, the jitted steps and how a call runs them
  loop       the host loop: one compiled program, evaluations, checkpoints, signals
  rundir     a run directory: its config, metrics log, checkpoints and lock
  parallel   the device mesh and the distributed runtime
  runtime    XLA options, the compilation cache, what the backend is
  inference  encode, decode, reconstruct and per-image errors over whole splits
  study      the latent-space study of a model: every number, figure and file it writes
  analysis   its measures (scikit-learn), pure functions over arrays
  plots      its figures
  report     its report.md, written from the numbers
  torch_port the lab's PyTorch network and weight conversion

Importing the package changes no environment variable and no JAX setting.
"""
