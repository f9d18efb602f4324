"""contraseg: pixel-wise and prototype contrastive learning for semantic segmentation."""

__version__ = "0.1.0"
