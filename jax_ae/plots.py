"""The study's figures: each function takes arrays and a path, and writes one PNG.

Figures keep a fixed size (no tight bounding box): a PNG is its *_size() inches times DPI.
"""
import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402  (pyplot after use('Agg'))

DPI = 100
CELL = 0.8  # inches per image in the image grids
SCATTER_PANEL = (6.0, 5.5)  # inches per scatter panel
LEGEND_WIDTH = 1.8  # inches beside the scatter panels
CURVES = (8.0, 4.5)  # inches of the training curves
COLORS = plt.get_cmap('tab10').colors


def reconstruction_size(num_images):
  """Figure size in inches of reconstructions(): one column per image, input over output."""
  return num_images * CELL, 2 * CELL + 0.8


def scatter_size(num_panels):
  return num_panels * SCATTER_PANEL[0] + LEGEND_WIDTH, SCATTER_PANEL[1]


def interpolation_size(num_pairs, steps):
  return 2 * steps * CELL + 0.4, num_pairs * (CELL + 0.25) + 0.5


def retrieval_size(num_queries, k):
  """Two grids side by side, a query and its k neighbours a row."""
  return interpolation_size(num_queries, k + 1)


def samples_size(rows, columns):
  """Two rows x columns grids side by side."""
  return 2 * columns * CELL + 0.4, rows * CELL + 0.6


def curves_size():
  return CURVES


def reconstructions(images, recons, errors, labels, class_names, test_mse, path):
  """Inputs (row 1) over their reconstructions (row 2), each with its MSE per pixel.

  images, recons: (N, 28, 28, 1) in [0, 1]; errors, labels: (N,).
  """
  fig, ax = plt.subplots(figsize=reconstruction_size(len(images)), layout='constrained')
  tops, centres = _show_grid(ax, np.stack([images, recons]), gap=(12, 4))
  for centre, error, label in zip(centres, errors, labels):
    ax.text(centre, tops[0] - 1, class_names[label], fontsize=9, ha='center', va='bottom')
    ax.text(centre, tops[1] - 1, f'{error:.4f}', fontsize=8, ha='center', va='bottom')
  for top, name in zip(tops, ('input', 'output')):
    ax.text(-2, top + 14, name, fontsize=9, ha='right', va='center', rotation=90)
  ax.set_title(f'Test inputs and reconstructions (MSE per pixel above each); '
               f'test MSE per pixel {test_mse:.5f}', fontsize=11)
  _save(fig, path)


def scatter(panels, labels, class_names, path):
  """Side-by-side 2-D maps (PCA, t-SNE) coloured by class, one shared legend on the right.

  panels: [(title, projection (N, 2), (x axis label, y axis label)), ...]; labels: (N,).
  """
  fig, axes = plt.subplots(1, len(panels), figsize=scatter_size(len(panels)), squeeze=False,
                           layout='constrained')
  for ax, (title, projection, (xlabel, ylabel)) in zip(axes[0], panels):
    for label, name in enumerate(class_names):
      points = projection[labels == label]
      ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6, color=COLORS[label % 10],
                 label=name, rasterized=True, linewidths=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
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
  fig, axes = plt.subplots(1, 2, figsize=interpolation_size(pairs, steps), layout='constrained')
  fig.get_layout_engine().set(wspace=0.05)  # the grids apart
  for ax, rows, title in zip(axes, (latent, pixel), ('decoded along a line in latent space',
                                                     'blended in pixel space')):
    tops, centres = _show_grid(ax, rows, gap=(12, 4))
    for top, names in zip(tops, end_names):
      for centre, name in zip(centres[[0, -1]], names):
        ax.text(centre, top - 1, name, fontsize=8, ha='center', va='bottom')
    ax.set_title(title, fontsize=11)
  _save(fig, path)


def training_curves(train, evals, steps_per_epoch, checkpoint_step, path):
  """Train loss and test MSE per pixel against updates, log scale, epochs on the top axis.

  train: [(step, loss), ...] (each the mean of the steps since the previous one); evals:
  [(step, test MSE), ...]; steps_per_epoch: None when unknown; checkpoint_step: the
  analysed checkpoint, marked.
  """
  fig, ax = plt.subplots(figsize=curves_size(), layout='constrained')
  if train:
    ax.plot(*zip(*train), lw=1, color=COLORS[0], label='train loss (MSE per pixel)')
  ax.plot(*zip(*evals), 'o-', ms=3, color=COLORS[1], label='test MSE per pixel')
  best = [(step, mse) for step, mse in evals if step == checkpoint_step]
  if best:
    ax.plot(*best[0], '*', ms=12, color=COLORS[3], label=f'analysed checkpoint (step '
            f'{checkpoint_step:,})')
  ax.set_yscale('log')
  ax.set_xlabel('updates')
  ax.set_ylabel('MSE per pixel')
  ax.grid(True, which='both', alpha=0.2)
  if steps_per_epoch:
    epochs = ax.secondary_xaxis('top', functions=(lambda s: s / steps_per_epoch,
                                                  lambda e: e * steps_per_epoch))
    epochs.set_xlabel('epochs')
    last = max(step for step, _ in evals)
    for epoch in range(1, int(last / steps_per_epoch + 1e-6) + 1):
      ax.axvline(epoch * steps_per_epoch, color='gray', lw=0.5, ls=':')
  ax.legend(frameon=False)
  _save(fig, path)


def compression(pca_mse, runs, path):
  """PCA's test MSE per pixel against its number of components, log axes, and each
  autoencoder as a point at its code size. pca_mse: (K,) for k = 1 .. K; runs: [(label,
  latent_dim, test MSE), ...], this run first."""
  fig, ax = plt.subplots(figsize=curves_size(), layout='constrained')
  ax.plot(np.arange(1, len(pca_mse) + 1), pca_mse, color=COLORS[0],
          label='PCA of the pixels, k components')
  for (label, latent_dim, mse), color in zip(runs, COLORS[1:] * len(runs)):
    ax.plot(latent_dim, mse, 'o', ms=7, color=color, label=f'autoencoder, code of {latent_dim} '
            f'({label}): {mse:.4f}')
  ax.set(xscale='log', yscale='log', xlabel='size of the code (components)',
         ylabel='test MSE per pixel')
  ax.grid(True, which='both', alpha=0.2)
  ax.legend(frameon=False, fontsize=8)
  _save(fig, path)


def retrieval(images, labels, panels, class_names, path):
  """Each query (first column, its class in bold) and its nearest training images, one panel
  per space.

  images: the queries, (Q, 28, 28, 1) in [0, 1], labels (Q,); panels: [(title, neighbours
  (Q, k, 28, 28, 1) in [0, 1], their labels (Q, k)), ...]. A neighbour of another class than
  its query has its class name in red.
  """
  k = panels[0][1].shape[1]
  fig, axes = plt.subplots(1, len(panels), figsize=retrieval_size(len(images), k),
                           squeeze=False, layout='constrained')
  for ax, (title, neighbours, neighbour_labels) in zip(axes[0], panels):
    rows = np.concatenate([images[:, None], neighbours], axis=1)  # (Q, 1 + k, 28, 28, 1)
    tops, centres = _show_grid(ax, rows, gap=(16, 4))  # 16: room for the class names
    for top, label, found in zip(tops, labels, neighbour_labels):
      for column, (centre, shown) in enumerate(zip(centres, [label, *found])):
        ax.text(centre, top - 1, class_names[shown], fontsize=7, ha='center', va='bottom',
                fontweight='normal' if column else 'bold',
                color='black' if shown == label else 'red')
    ax.set_title(title, fontsize=11)
  _save(fig, path)


def samples(panels, path):
  """Grids of images side by side. panels: [(title, images (rows, columns, 28, 28, 1) in
  [0, 1]), ...]."""
  rows, columns = panels[0][1].shape[:2]
  fig, axes = plt.subplots(1, len(panels), figsize=samples_size(rows, columns), squeeze=False,
                           layout='constrained')
  fig.get_layout_engine().set(wspace=0.05)  # the grids apart
  for ax, (title, images) in zip(axes[0], panels):
    _show_grid(ax, images, gap=(4, 4))
    ax.set_title(title, fontsize=11)
  _save(fig, path)


def _show_grid(ax, images, gap):
  """Shows (rows, columns, h, w, 1) images as one picture, gap = (rows', columns') pixels
  apart, with the gap above each row; returns the rows' tops and the columns' centres.

  One picture, not an axes per image: an axes costs matplotlib ~15 ms to make and lay out,
  and the retrieval figure would need 120.
  """
  rows, columns, height, width = images.shape[:4]
  tops = np.arange(rows) * (height + gap[0]) + gap[0]
  lefts = np.arange(columns) * (width + gap[1])
  grid = np.full((tops[-1] + height, lefts[-1] + width), np.nan)  # nan: transparent
  for row, top in enumerate(tops):
    for column, left in enumerate(lefts):
      grid[top:top + height, left:left + width] = images[row, column, ..., 0]
  ax.imshow(grid, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  ax.set_axis_off()
  return tops - 0.5, lefts + (width - 1) / 2  # pixel centres sit on integers


def _save(fig, path):
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
