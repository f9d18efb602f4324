"""The three released layouts :mod:`.convert` understands, one planner each: released state
dict -> :class:`~.convert_plan.Plan` (the ``build_segmentor`` keywords and one op per
contraseg tensor). The key map they implement is tabulated in :mod:`.convert`.

* :func:`plan_openseg_hrnet`: openseg / ContrastiveSeg / ProtoSeg ``HRNet_W48`` (+ ``proj_head``);
* :func:`plan_protoseg_hrnet`: ProtoSeg ``HRNet_W48_Proto`` (prototype classifier);
* :func:`plan_deeplabv2`: DeepLab-v2 ResNet-101 with AdaptSegNet's / FDA's ASPP classifier
  (ProDA's ``Classifier_Module2`` head is refused, naming what is missing).

The UDA layouts with a torchvision-style backbone (ProAC, FADA) are in :mod:`.convert_uda`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .convert_plan import BN_KEYS, ConversionError, Op, Plan, copy_bn, copy_with_bn_counters, require
from .convert_uda import refuse_proda


def _hrnet_backbone(source: Mapping[str, Tensor], fmt: str) -> list[Op]:
    keys = [k for k in source if k.startswith("backbone.")]
    if not keys:
        raise ConversionError(f"{fmt}: the checkpoint has no 'backbone.*' tensors; is it a {fmt} checkpoint?")
    return copy_with_bn_counters(keys, lambda k: f"backbone.body.{k[len('backbone.'):]}")


def _hrnet_head(ops: list[Op], source: Mapping[str, Tensor], fmt: str) -> None:
    require(source, "cls_head.0.weight", fmt)
    ops += [Op(f"head.conv.0.{k}", "copy", (f"cls_head.0.{k}",)) for k in ("weight", "bias")]
    copy_bn(ops, "cls_head.1.0.", "head.conv.1.")


def plan_openseg_hrnet(source: Mapping[str, Tensor]) -> Plan:
    fmt = "openseg-hrnet-w48"
    dropped = {}
    classifier = require(source, "cls_head.3.weight", fmt)
    ops = _hrnet_backbone(source, fmt)
    _hrnet_head(ops, source, fmt)
    ops += [Op("head.classifier.1.weight", "copy", ("cls_head.3.weight",)), Op("head.classifier.1.bias", "fill")]
    num_classes = int(classifier.shape[0])
    projection, embed_dim = None, 256
    if "proj_head.proj.0.weight" in source:
        if "proj_head.proj.1.0.weight" not in source:
            raise ConversionError(f"{fmt}: proj_head has no BatchNorm ('proj_head.proj.1.0.*'): only ContrastiveSeg's "
                                  f"'convmlp' projection is supported")
        projection, embed_dim = "convmlp", int(require(source, "proj_head.proj.2.weight", fmt).shape[0])
        ops.append(Op("projection.proj.0.weight", "copy", ("proj_head.proj.0.weight",)))
        for k in BN_KEYS:
            if k == "running_mean":
                ops.append(Op("projection.proj.1.running_mean", "fold",
                              ("proj_head.proj.1.0.running_mean", "proj_head.proj.0.bias")))
            else:
                ops.append(Op(f"projection.proj.1.{k}", "copy", (f"proj_head.proj.1.0.{k}",)))
        ops += [Op("projection.proj.3.weight", "copy", ("proj_head.proj.2.weight",)),
                Op("projection.proj.3.bias", "copy", ("proj_head.proj.2.bias",))]
    for key in source:
        if key.endswith("_queue") or key.endswith("_queue_ptr"):
            dropped[key] = "ContrastiveSeg memory bank (training state, not needed to predict)"
    config = dict(backbone="hrnet_w48_openseg", head="hrnet", num_classes=num_classes, embed_dim=embed_dim,
                  projection=projection, classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    return Plan(config | _HRNET_RELEASED, ops, dropped, _HRNET_NOTES[:])


def plan_protoseg_hrnet(source: Mapping[str, Tensor]) -> Plan:
    fmt = "protoseg-hrnet-w48"
    prototypes = require(source, "prototypes", fmt)
    if prototypes.dim() != 3:
        raise ConversionError(f"{fmt}: 'prototypes' must be K x M x D, got shape {tuple(prototypes.shape)}")
    num_classes, num_prototypes, dim = (int(s) for s in prototypes.shape)
    ops = _hrnet_backbone(source, fmt)
    _hrnet_head(ops, source, fmt)
    ops.append(Op("prototype_head.bank.prototypes", "copy", ("prototypes",)))
    for i in (0, 2):
        for k in ("weight", "bias"):
            ops.append(Op(f"projection.proj.{i}.{k}", "copy", (f"proj_head.proj.{i}.{k}",)))
    for norm in ("feat_norm", "mask_norm"):
        ops += [Op(f"prototype_head.{norm}.{k}", "copy", (f"{norm}.{k}",)) for k in ("weight", "bias")]
    dropped = {}
    for key in source:
        if key.startswith("proj_head.mlp2."):
            twin = "proj_head.proj." + key[len("proj_head.mlp2."):]
            if twin not in source or not torch.equal(source[twin], source[key]):
                raise ConversionError(f"{fmt}: {key!r} differs from {twin!r} (they are one module in ProtoSeg)")
            dropped[key] = f"alias of {twin} (ProtoSeg's ProjectionHead sets self.proj = self.mlp2)"
    config = dict(backbone="hrnet_w48_openseg", head="hrnet", num_classes=num_classes, embed_dim=dim, projection="mlp",
                  classifier="prototype", num_prototypes=num_prototypes, output_stride=8, pretrained=None,
                  prototype_feat_norm=True, projection_norm="width")
    notes = _HRNET_NOTES + [
        "projection_norm 'width': proj_head's output is L2-normalised over the image width as released "
        "(ProtoSeg lib/models/modules/contrast.py:15-16,29), not over channels (contraseg's default)."
    ]
    return Plan(config | _HRNET_RELEASED, ops, dropped, notes)


# openseg's HRNet fuses branches by interpolating to the target size (hrnet_backbone.py:275-283).
_HRNET_RELEASED = {"hrnet_fusion": "interpolate"}
_HRNET_NOTES = [
    "hrnet_fusion 'interpolate': branches are fused by interpolating to the target size as released, "
    "so inputs whose sides are not multiples of 32 are not padded (contraseg's default pads)."
]


def _aspp_layer(source: Mapping[str, Tensor], fmt: str) -> tuple[str, str | None]:
    """(the classifier layer used, the auxiliary one dropped or None)."""
    if any(k.startswith("layer6.conv2d_list.") for k in source):
        return "layer6", "layer5"
    if any(k.startswith("layer5.conv2d_list.") for k in source):
        return "layer5", None
    raise ConversionError(f"{fmt}: the checkpoint has no 'layer5.conv2d_list.*' (ASPP classifier); "
                          f"only the AdaptSegNet-style DeepLab-v2 classifier is supported")


def plan_deeplabv2(source: Mapping[str, Tensor], aspp_branches: int | None = None) -> Plan:
    fmt = "deeplabv2-r101"
    refuse_proda(source, fmt)
    for key, other in (("decoder.conv2d_list.0.weight", "proac-deeplab"), ("classifier.conv2d_list.0.weight",
                                                                          "fada-deeplabv2")):
        if key in source:
            raise ConversionError(f"{fmt}: {key!r} is the {other} layout; use --from {other}")
    require(source, "conv1.weight", fmt)
    layer, aux = _aspp_layer(source, fmt)
    branches = sorted({int(m.group(1)) for k in source if (m := re.match(rf"{layer}\.conv2d_list\.(\d+)\.", k))})
    if branches != list(range(4)):
        raise ConversionError(f"{fmt}: {layer}.conv2d_list has branches {branches}, "
                              f"expected 0..3 (rates 6, 12, 18, 24)")
    keep = 4 if aspp_branches is None else int(aspp_branches)
    if not 1 <= keep <= 4:
        raise ConversionError(f"aspp_branches must be 1..4, got {aspp_branches!r}")
    ops = copy_with_bn_counters([k for k in source if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3",
                                                                         "layer4")], lambda k: f"backbone.body.{k}")
    for i in range(4):
        for k in ("weight", "bias"):
            src = f"{layer}.conv2d_list.{i}.{k}"
            ops.append(Op(f"head.branches.{i}.{k}", "copy" if i < keep else "zero", (src,)))
    dropped = {}
    if aux is not None:
        dropped.update({k: "multi-level auxiliary classifier on layer3 (not used to predict)"
                        for k in source if k.startswith(f"{aux}.")})
    num_classes = int(require(source, f"{layer}.conv2d_list.0.weight", fmt).shape[0])
    config = dict(backbone="resnet101_deeplabv2", head="deeplabv2", num_classes=num_classes, embed_dim=256,
                  projection=None, classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    notes = []
    if keep < 4:
        notes.append(f"ASPP branches {keep}..3 are zeroed, so the logits sum branches 0..{keep - 1} "
                     f"as AdaptSegNet's Classifier_Module does (it returns inside its loop).")
    return Plan(config, ops, dropped, notes)
