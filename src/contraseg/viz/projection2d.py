"""2-D maps of embeddings: t-SNE (scikit-learn), UMAP (umap-learn, optional) or PCA.

Pixels and prototypes are projected together (one call, prototypes appended as extra
rows), so the prototypes land in the same map as the pixels. The embeddings are unit
vectors, for which the Euclidean distance is a monotone function of the cosine
(``|a - b|^2 = 2 - 2 cos``), so t-SNE's default metric ranks neighbours by cosine.

* ``tsne``: van der Maaten and Hinton 2008; PCA initialisation, fixed ``random_state``,
  perplexity ``min(30, (N - 1) / 3)`` so that small samples work too.
* ``umap``: McInnes et al. 2018, cosine metric, fixed ``random_state``.
* ``pca``: the first two principal components (fast, linear, deterministic).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["PROJECTION_METHODS", "UMAP_INSTALL_HINT", "check_method", "project_2d"]

PROJECTION_METHODS = ("tsne", "umap", "pca")
UMAP_INSTALL_HINT = "--method umap needs umap-learn, which is not installed: pip install umap-learn (or contraseg[umap])"


def check_method(method: str) -> None:
    """Fail early for an unknown method (ValueError) or UMAP without umap-learn (ImportError)."""
    if method not in PROJECTION_METHODS:
        raise ValueError(f"method must be one of {', '.join(PROJECTION_METHODS)}, got {method!r}")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ImportError(UMAP_INSTALL_HINT) from None


def _as_array(points: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(points, Tensor):
        return points.detach().cpu().double().numpy()
    return np.asarray(points, dtype=np.float64)


def _pca(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    # Fix the sign of each axis (the largest-magnitude coordinate positive): SVD signs are arbitrary.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(coords.shape[1])])
    coords = coords * np.where(signs == 0, 1.0, signs)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(x) - 1) / 3.0)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto").fit_transform(x.astype(np.float32)).astype(np.float64)


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    import umap
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, len(x) - 1))
    return np.asarray(reducer.fit_transform(x.astype(np.float32)), dtype=np.float64)


def project_2d(points: Tensor | np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """Project N x D points to N x 2 coordinates.

    Args:
        points: N x D (N >= 4; a torch tensor or an array).
        method: ``"tsne"``, ``"umap"`` or ``"pca"``.
        seed: random state of t-SNE / UMAP (PCA is deterministic).

    Raises:
        ValueError: unknown method, or not an N x D input with N >= 4 finite rows.
        ImportError: ``method="umap"`` without umap-learn (the message says how to install it).
    """
    check_method(method)
    x = _as_array(points)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"points must be N x D with N >= 4, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("points contain NaN or infinite values")
    if method == "pca":
        return _pca(x)
    if method == "umap":
        return _umap(x, seed)
    return _tsne(x, seed)
