"""Datasets, transforms and pseudo-label folders.

``build_dataset(name, **kwargs)`` constructs a registered dataset; every dataset
returns ``{"image": float32 3 x H x W, "label": int64 H x W (255 ignore), "name": str}``
and has ``.info`` (:class:`DatasetInfo`).

=========================  ===================================================
``build_dataset``          construct a dataset by name (``dataset_names()``)
``register_dataset``       class decorator adding a third-party dataset
``dataset_options``        the keyword arguments a config's ``options:`` may set
``DatasetInfo``            class names, palette, ignore index, eval subset
``SegmentationDataset``    base class: pseudo-label override + joint transform
``FileSegmentationDataset``  base class of the on-disk formats
``LabelTable``             raw label id -> train id lookup table
``TrainTransform``         random scale / crop / flip / jitter + normalise
``EvalTransform``          optional resize + normalise
``denormalize``            normalised image -> uint8 for visualisation
``PseudoLabelDir``         ``<name>.png`` pseudo labels; ``write_label_png``
``check_dataset``          the report behind ``contraseg datasets check``
=========================  ===================================================
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "build_dataset": "registry",
    "register_dataset": "registry",
    "dataset_names": "registry",
    "get_dataset_class": "registry",
    "dataset_options": "registry",
    "DatasetInfo": "dataset_info",
    "SegmentationDataset": "base",
    "FileSegmentationDataset": "base",
    "LabelTable": "dataset_info",
    "TrainTransform": "transforms",
    "EvalTransform": "transforms",
    "denormalize": "transforms",
    "normalize": "transforms",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "PseudoLabelDir": "pseudo_labels",
    "write_label_png": "pseudo_labels",
    "colorize": "palettes",
    "check_dataset": "check",
    "CityscapesDataset": "cityscapes",
    "GTA5Dataset": "gta5",
    "SynthiaDataset": "synthia",
    "ADE20KDataset": "ade20k",
    "PascalContextDataset": "pascal_context",
    "CocoStuffDataset": "coco_stuff",
    "SyntheticStreetDataset": "synthetic",
    "SyntheticSourceDataset": "synthetic",
    "SyntheticTargetDataset": "synthetic",
    "render_scene": "synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
