"""The analysis figures: each function takes arrays and a path, and writes one PNG.

Figures keep a fixed size (no tight bounding box): a PNG is its *_size() inches times DPI.
"""
import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402  (pyplot after use('Agg'))

DPI = 100
CELL = 0.8  # inches per image in the image grids
PCA_PANEL = (6.0, 5.5)  # inches per scatter panel
LEGEND_WIDTH = 1.8  # inches beside the scatter panels
COLORS = plt.get_cmap('tab10').colors


def reconstruction_size(num_images):
  """Figure size in inches of reconstructions(): one column per image, input over output."""
  return num_images * CELL, 2 * CELL + 0.8


def pca_size(num_panels):
  return num_panels * PCA_PANEL[0] + LEGEND_WIDTH, PCA_PANEL[1]


def interpolation_size(num_pairs, steps):
  return 2 * steps * CELL + 0.4, num_pairs * (CELL + 0.25) + 0.5


def reconstructions(images, recons, errors, labels, class_names, test_mse, path):
  """Inputs (row 1) over their reconstructions (row 2), each with its MSE per pixel.

  images, recons: (N, 28, 28, 1) in [0, 1]; errors, labels: (N,).
  """
  fig, axes = plt.subplots(2, len(images), figsize=reconstruction_size(len(images)),
                           squeeze=False, layout='constrained')
  for column, (image, recon, error, label) in enumerate(zip(images, recons, errors, labels)):
    top, bottom = axes[0, column], axes[1, column]
    _show(top, image)
    _show(bottom, recon)
    top.set_title(class_names[label], fontsize=9)
    bottom.set_xlabel(f'{error:.4f}', fontsize=8)
  axes[0, 0].set_ylabel('input', fontsize=9)
  axes[1, 0].set_ylabel('output', fontsize=9)
  fig.suptitle(f'Test inputs and reconstructions (MSE per pixel under each); '
               f'test MSE per pixel {test_mse:.5f}', fontsize=11)
  _save(fig, path)


def pca_scatter(panels, labels, class_names, path):
  """Side-by-side 2-D PCA scatters coloured by class, one shared legend on the right.

  panels: [(title, projection (N, 2), explained variance ratio (2,)), ...].
  """
  fig, axes = plt.subplots(1, len(panels), figsize=pca_size(len(panels)), squeeze=False,
                           layout='constrained')
  for ax, (title, projection, variance) in zip(axes[0], panels):
    for label, name in enumerate(class_names):
      points = projection[labels == label]
      ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6, color=COLORS[label % 10],
                 label=name, rasterized=True, linewidths=0)
    ax.set_xlabel(f'PC1 ({variance[0]:.1%} of variance)')
    ax.set_ylabel(f'PC2 ({variance[1]:.1%} of variance)')
    ax.set_title(title, fontsize=11)
  handles, names = axes[0, 0].get_legend_handles_labels()
  # Outside the axes: the scatter fills its panel and a legend inside would hide points.
  fig.legend(handles, names, loc='outside right center', markerscale=3, frameon=False)
  _save(fig, path)


def interpolations(latent, pixel, end_names, path):
  """Latent-space interpolations (left) beside pixel-space blends (right) of the same pairs.

  latent, pixel: (pairs, steps, 28, 28, 1) in [0, 1]; each row runs from one image to the
  other; end_names: (pairs, 2) class names of the two ends, written above them.
  """
  pairs, steps = latent.shape[:2]
  fig = plt.figure(figsize=interpolation_size(pairs, steps), layout='constrained')
  for subfig, rows, title in zip(fig.subfigures(1, 2), (latent, pixel),
                                 ('decoded along a line in latent space',
                                  'blended in pixel space')):
    axes = subfig.subplots(pairs, steps, squeeze=False)
    for ax, image in zip(axes.flat, rows.reshape(-1, *rows.shape[2:])):
      _show(ax, image)
    for row, names in zip(axes, end_names):
      for ax, name in zip(row[[0, -1]], names):
        ax.set_title(name, fontsize=8)
    subfig.suptitle(title, fontsize=11)
  _save(fig, path)


def _show(ax, image):
  ax.imshow(np.squeeze(image, -1), cmap='gray', vmin=0, vmax=1)
  ax.set_xticks([])
  ax.set_yticks([])


def _save(fig, path):
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
