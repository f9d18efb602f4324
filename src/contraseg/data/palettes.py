"""Class names and colour palettes of the supported datasets.

* Cityscapes: the 19 train ids, names and colours of the official label table
  (``cityscapesscripts.helpers.labels``); :data:`CITYSCAPES_ID_TO_TRAIN_ID` maps the
  34 raw ``labelIds`` (0..33) to train ids (255 = ignore). GTA5 labels use the same ids.
* SYNTHIA: labels are given as the 19 Cityscapes train ids; the standard evaluation
  subsets are :data:`SYNTHIA_16_CLASSES` (Cityscapes minus terrain, truck, train) and
  :data:`SYNTHIA_13_CLASSES` (also minus wall, fence, pole).
* ADE20K (SceneParse150): the 150 class names in train-id order and a deterministic
  palette (the bit-interleaving PASCAL VOC colour map, starting at index 1 so no class
  is black).
* PASCAL-Context (59 classes) and COCO-Stuff (171 classes): class names in train-id
  order, palettes from the same VOC colour map.

:func:`colorize` turns a train-id map into an RGB image with a palette.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CITYSCAPES_PALETTE",
    "COCO_STUFF_171_CLASSES",
    "COCO_STUFF_171_PALETTE",
    "PASCAL_CONTEXT_59_CLASSES",
    "PASCAL_CONTEXT_59_PALETTE",
    "SYNTHIA_13_CLASSES",
    "SYNTHIA_16_CLASSES",
    "colorize",
    "voc_colormap",
]

Palette = tuple[tuple[int, int, int], ...]


def _cityscapes_tables() -> tuple[tuple[str, ...], Palette, dict[int, int]]:
    """(train-id names, train-id colours, raw id -> train id) from the official table."""
    from cityscapesscripts.helpers.labels import labels

    by_train_id = {}
    id_to_train_id: dict[int, int] = {}
    for label in labels:
        if label.id < 0:  # 'license plate' (id -1) never appears in labelIds images
            continue
        train_id = 255 if label.trainId in (-1, 255) else label.trainId
        id_to_train_id[label.id] = train_id
        if train_id != 255:
            by_train_id[train_id] = (label.name, tuple(int(c) for c in label.color))
    count = len(by_train_id)
    if sorted(by_train_id) != list(range(count)):
        raise ValueError(f"cityscapesscripts label table has non-contiguous train ids {sorted(by_train_id)}")
    names = tuple(by_train_id[k][0] for k in range(count))
    colours = tuple(by_train_id[k][1] for k in range(count))
    return names, colours, id_to_train_id  # type: ignore[return-value]


CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_ID_TO_TRAIN_ID = _cityscapes_tables()


def _train_ids(names: Sequence[str]) -> tuple[int, ...]:
    return tuple(CITYSCAPES_CLASSES.index(name) for name in names)


# SYNTHIA evaluation subsets (Cityscapes train ids, ascending).
SYNTHIA_16_CLASSES: tuple[int, ...] = tuple(
    k for k in range(len(CITYSCAPES_CLASSES)) if k not in _train_ids(("terrain", "truck", "train"))
)
SYNTHIA_13_CLASSES: tuple[int, ...] = tuple(
    k for k in SYNTHIA_16_CLASSES if k not in _train_ids(("wall", "fence", "pole"))
)

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


def voc_colormap(count: int, start: int = 0) -> Palette:
    """``count`` distinct RGB colours from the PASCAL VOC bit-interleaving colour map.

    Colour of index ``n``: bit ``j`` of n's groups of three bits goes to bit ``7 - j``
    of R, G and B in turn. ``start`` skips the first indices (index 0 is black).
    """
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got count={count} start={start}")
    colours = []
    for index in range(start, start + count):
        r = g = b = 0
        n = index
        for shift in range(7, -1, -1):
            r |= (n & 1) << shift
            g |= ((n >> 1) & 1) << shift
            b |= ((n >> 2) & 1) << shift
            n >>= 3
        colours.append((r, g, b))
    return tuple(colours)


ADE20K_PALETTE: Palette = voc_colormap(len(ADE20K_CLASSES), start=1)

# PASCAL-Context, the 59-class setting (Mottaghi et al., CVPR 2014): the 59 most frequent
# of the 459 Detail-API classes in ascending Detail id (alphabetical) order, which is
# the order of the values 1..59 in the 60-value label PNGs (0 = background).
PASCAL_CONTEXT_59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
PASCAL_CONTEXT_59_PALETTE: Palette = voc_colormap(len(PASCAL_CONTEXT_59_CLASSES), start=1)

# COCO-Stuff (Caesar et al., CVPR 2018): the 80 thing and 91 stuff classes that occur in
# the annotations, in ascending COCO id order (train id = position in this list).
COCO_STUFF_171_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
COCO_STUFF_171_PALETTE: Palette = voc_colormap(len(COCO_STUFF_171_CLASSES), start=1)


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Train ids H x W -> uint8 H x W x 3 RGB; ids outside the palette get ``ignore_color``."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype.kind not in "iu":
        raise ValueError(f"label must be an integer H x W array, got shape {label.shape} dtype {label.dtype}")
    table = np.array(list(palette) + [list(ignore_color)], dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 3:
        raise ValueError(f"palette must be a list of RGB triples, got shape {table.shape[:-1] + (table.shape[-1],)}")
    index = np.where((label >= 0) & (label < len(palette)), label, len(palette))
    return table[index]
