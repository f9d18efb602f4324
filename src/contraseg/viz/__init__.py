"""Pictures of the embedding space and of training runs (behind ``contraseg viz``).

Computation and drawing are separate, so notebooks can use either:

============================  =========================================================
``sample_pixels``             class-balanced uniform pixel sample of label maps
``BalancedPixelSampler``      the same, image by image, keeping the embeddings
``collect_pixel_sample``      run segmentors over a dataset -> ``PixelSample``
``embedding_stats``           per-class cosine to own / nearest other prototype, silhouette
``project_2d``                t-SNE / UMAP / PCA to 2-D
``embedding_view``            prototypes + joint projection + stats for one model
``prototypes_from_state``     ProAC / ProtoSeg prototypes of a checkpoint dict
``prototype_similarity``      cosine matrix, separation, per-class diversity
``read_run_curves``           loss / lr / mIoU series of a run's ``log.jsonl``
``plot_embedding``            scatter panels (matplotlib Figure)
``plot_prototype_similarity``  heatmap + diversity bars (Figure)
``plot_curves``               loss terms, lr, mIoU (Figure)
``save_png``                  write a Figure at its exact size
============================  =========================================================

Needs matplotlib and scikit-learn (``pip install contraseg[viz]``); UMAP needs umap-learn.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "sample_pixels": "pixel_sampling",
    "gather_pixels": "pixel_sampling",
    "pixel_keys": "pixel_sampling",
    "class_quota": "pixel_sampling",
    "class_name": "cosine_stats",
    "BalancedPixelSampler": "pixel_sampling",
    "PixelSample": "pixel_sampling",
    "collect_pixel_sample": "embedding_collect",
    "embedding_stats": "cosine_stats",
    "prototype_cosines": "cosine_stats",
    "class_mean_prototypes": "cosine_stats",
    "silhouette": "cosine_stats",
    "project_2d": "projection2d",
    "PROJECTION_METHODS": "projection2d",
    "embedding_view": "views",
    "EmbeddingView": "views",
    "PrototypeSet": "prototype_sources",
    "prototypes_from_state": "prototype_sources",
    "prototypes_from_file": "prototype_sources",
    "class_mean_set": "prototype_sources",
    "prototype_similarity": "prototype_stats",
    "PrototypeSimilarity": "prototype_stats",
    "simplex_optimum": "prototype_stats",
    "PrototypeUsage": "diversity",
    "prototype_diversity": "diversity",
    "prototype_usage": "diversity",
    "format_prototype_diversity": "report",
    "RunCurves": "curves",
    "find_run_log": "curves",
    "read_run_curves": "curves",
    "summarise_curves": "curves",
    "EmbeddingPanel": "embedding_plot",
    "plot_embedding": "embedding_plot",
    "plot_prototype_similarity": "prototypes_plot",
    "plot_curves": "curves_plot",
    "new_figure": "style",
    "save_png": "style",
    "figure_pixels": "style",
    "format_embedding_stats": "report",
    "format_prototype_summary": "report",
    "format_curves_summary": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
