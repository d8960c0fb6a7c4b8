"""The lab's convolutional autoencoder on MNIST, in JAX.

Importing the package sets two XLA:CPU options, before JAX starts its CPU backend, that
together make this model's training step 1.6x faster on a CPU
(results/bench/xla_flags.json):
- convolutions compile to Eigen instead of YNNPACK (dots stay on YNNPACK): YNNPACK's
  convolution gradients were most of the step's time;
- multi-output fusion: elementwise loops that read the same arrays, such as Adam's two
  moment updates, run as one pass over memory.
A flag already in XLA_FLAGS is left as the user set it; on GPU and TPU these do nothing.
"""
import os

CPU_XLA_FLAGS = {
    '--xla_cpu_experimental_ynn_fusion_type': 'individual_dot',
    '--xla_backend_extra_options': 'xla_cpu_use_multi_output_fusion',
}


def _add_xla_flags(flags):
  current = os.environ.get('XLA_FLAGS', '')
  given = {flag.split('=')[0] for flag in current.split()}
  added = [f'{name}={value}' for name, value in flags.items() if name not in given]
  if added:
    os.environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()


_add_xla_flags(CPU_XLA_FLAGS)
