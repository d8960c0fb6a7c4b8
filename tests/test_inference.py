import jax
import numpy as np

from jax_ae import inference
from jax_ae.model import init_params


def test_image_errors_are_per_image_mse():
  images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28, 1), dtype=np.uint8)
  params = init_params(jax.random.key(0))
  errors = inference.image_errors(params, images)  # fewer than a padded batch
  recon = inference.reconstruct(params, images)
  expected = np.mean((recon - images / 255.0) ** 2, axis=(1, 2, 3))
  assert errors.shape == (7,)
  np.testing.assert_allclose(errors, expected, rtol=1e-5)
  codes = inference.encode(params, images)
  assert codes.shape == (7, 576)
  np.testing.assert_allclose(inference.decode(params, codes), recon, atol=1e-6)
