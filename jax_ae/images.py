"""What an image is to jax-ae, and the one conversion of pixel values.

An image is 28x28 grayscale, held as uint8 levels 0-255 (the datasets, PIL) or as floats in
[0, 1] (torchvision's ToTensor, matplotlib); the model sees float32 (B, 28, 28, 1) in [0, 1].
to_float is the one place that divides by 255, and it decides by the dtype, so a float image
is never divided twice. checked() is the check at the public API's edge: what a user passes
either is such images or is refused in one line.
"""
import numpy as np

from jax_ae.errors import UserError
from jax_ae.model import IMAGE_SHAPE

PIXELS = int(np.prod(IMAGE_SHAPE))  # 784
SHAPES = '(N, 28, 28), (N, 28, 28, 1) or (N, 784)'
WHAT_TO_PASS = f'pass images of shape {SHAPES}, as uint8 0-255 or floats in [0, 1]'


class ImageError(UserError):
  """Arrays that are not images or codes the model takes; str() says what came and what to pass."""


def to_float(images):
  """(B, 28, 28[, 1]) or (B, 784) images -> float32 (B, 28, 28, 1) in [0, 1]: integer levels
  are divided by 255, floats are taken as they are. Numpy or JAX arrays, inside jit too."""
  batch = images.reshape(-1, *IMAGE_SHAPE).astype(np.float32)
  return batch / 255 if np.issubdtype(images.dtype, np.integer) else batch


def checked(images):
  """images as a numpy array of (N, 28, 28, 1), uint8 or float32 in [0, 1], after checking
  that they are images; ImageError (one line) for anything else."""
  array = _array(images, WHAT_TO_PASS)
  shape = array.shape
  if shape[1:] not in ((28, 28), (28, 28, 1), (PIXELS,)):
    hint = ' (one image? add an axis: images[None])' if shape in ((28, 28), (28, 28, 1),
                                                                   (PIXELS,)) else ''
    raise ImageError(f'got an array of shape {shape}{hint}: {WHAT_TO_PASS}')
  if not shape[0]:
    raise ImageError(f'got no images (shape {shape}): {WHAT_TO_PASS}')
  low, high = array.min(), array.max()
  if np.issubdtype(array.dtype, np.integer):
    if low < 0 or high > 255:
      raise ImageError(f'got {array.dtype} values from {low} to {high}: {WHAT_TO_PASS}')
    return array.reshape(-1, *IMAGE_SHAPE).astype(np.uint8, copy=False)
  if not np.isfinite(array).all():
    raise ImageError(f'got {array.dtype} images holding NaN or infinity: {WHAT_TO_PASS}')
  if high > 1:
    raise ImageError(f'got {array.dtype} values up to {high:g}, so 0-255 levels as floats: '
                     'divide by 255 once, or pass them as uint8')
  if low < 0:
    raise ImageError(f'got {array.dtype} values down to {low:g} (normalized images?): pass '
                     'the pixels in [0, 1], before any mean/std normalization')
  return array.reshape(-1, *IMAGE_SHAPE).astype(np.float32, copy=False)


def checked_codes(codes, latent_dim):
  """codes as float32 (N, latent_dim) after checking them; ImageError (one line) otherwise."""
  advice = f'pass codes of shape (N, {latent_dim}), as encode() returns them for this model'
  array = _array(codes, advice)
  if array.ndim != 2 or array.shape[1] != latent_dim or not array.shape[0]:
    raise ImageError(f'got codes of shape {array.shape}: {advice}')
  if np.issubdtype(array.dtype, np.integer):
    array = array.astype(np.float32)
  if not np.isfinite(array).all():
    raise ImageError(f'got {array.dtype} codes holding NaN or infinity: {advice}')
  return array.astype(np.float32, copy=False)


def _array(values, advice):
  """values as a numpy array of real numbers (torch tensors, JAX arrays and lists too)."""
  if hasattr(values, 'detach'):  # a torch.Tensor, maybe on a GPU or requiring grad
    values = values.detach().cpu().numpy()
  try:
    array = np.asarray(values)
  except (TypeError, ValueError) as error:  # ragged lists, objects numpy cannot stack
    raise ImageError(f'got a {type(values).__name__} that is no array ({error}): '
                     f'{advice}') from None
  if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                 or np.issubdtype(array.dtype, np.floating)):
    raise ImageError(f'got an array of dtype {array.dtype}: {advice}')
  return array
