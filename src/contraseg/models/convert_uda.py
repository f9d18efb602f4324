"""Released layouts of the UDA line with a torchvision-style ResNet-101 (:mod:`.convert`):

* :func:`plan_proac_deeplab`: ProAC's UDA ``DeepLab`` (ProAC_TCSVT2024@084d77d
  UDA/models/deeplab.py, what UDA/train.py trains), saved as
  ``{'DeepLab': {'model_state': ...}}`` (UDA/train.py:152-161, 174-183) with keys
  ``backbone.*`` (UDA/models/backbone/resnet.py), ``decoder.conv2d_list.{0..3}.*`` (four
  Conv3x3 2048 -> K, rates 6/12/18/24, **all four summed**, UDA/models/decoder.py:20-41)
  and ``decoder.proj.*`` (Conv1x1 2048 -> 256 on the backbone features, :33, :37);
  backbone ``resnet101_proac`` (:mod:`.proac_resnet`);
* :func:`plan_fada`: FADA's ``feature_extractor`` + ``classifier`` (JDAI-CV/FADA@a1c6403
  train_self_distill.py:170; test.py:102-105 strips ``module.``), keys ``backbone.*``
  (torchvision ResNet-101 with ``replace_stride_with_dilation=[False, True, True]``,
  core/models/feature_extractor.py:40-46; core/models/resnet.py is torchvision's) and
  ``conv2d_list.{0..3}.*`` (``ASPP_Classifier_V2``, the same summed 4-conv ASPP,
  core/models/classifier.py:6-32): backbone ``resnet101`` at output stride 8, exactly.

:func:`.convert.load_released_state_dict` merges FADA's two dicts into ``backbone.*`` +
``classifier.*`` and unwraps ProAC's / ProDA's ``{<NetClass>: {'model_state': ...}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from .convert_plan import ConversionError, Op, Plan, copy_with_bn_counters, require


def _backbone_ops(source: Mapping[str, Tensor], fmt: str) -> list[Op]:
    keys = [k for k in source if k.startswith("backbone.")]
    if not keys:
        raise ConversionError(f"{fmt}: the checkpoint has no 'backbone.*' tensors; is it a {fmt} checkpoint?")
    return copy_with_bn_counters(keys, lambda k: f"backbone.body.{k[len('backbone.'):]}")


def _aspp_ops(source: Mapping[str, Tensor], prefix: str, fmt: str) -> tuple[list[Op], int]:
    """Copy ops of the four summed ASPP convs under ``prefix`` and K."""
    branches = sorted({int(m.group(1)) for k in source if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))})
    if branches != list(range(4)):
        raise ConversionError(f"{fmt}: {prefix}* has branches {branches}, expected 0..3 (rates 6, 12, 18, 24)")
    ops = [Op(f"head.branches.{i}.{k}", "copy", (f"{prefix}{i}.{k}",)) for i in range(4) for k in ("weight", "bias")]
    return ops, int(require(source, f"{prefix}0.weight", fmt).shape[0])


def plan_proac_deeplab(source: Mapping[str, Tensor]) -> Plan:
    fmt = "proac-deeplab"
    ops = _backbone_ops(source, fmt)
    aspp, num_classes = _aspp_ops(source, "decoder.conv2d_list.", fmt)
    proj = require(source, "decoder.proj.weight", fmt)
    ops += aspp + [Op(f"projection.proj.{k}", "copy", (f"decoder.proj.{k}",)) for k in ("weight", "bias")]
    config = dict(backbone="resnet101_proac", head="deeplabv2", num_classes=num_classes, embed_dim=int(proj.shape[0]),
                  projection="linear", classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    notes = ["decoder.proj is the projection; ProAC's model returns it unnormalised and its loss L2-normalises it "
             "over channels (UDA/models/loss.py:18,33-34): contraseg's 'embed' is that normalised feature."]
    return Plan(config, ops, {}, notes)


def plan_fada(source: Mapping[str, Tensor]) -> Plan:
    fmt = "fada-deeplabv2"
    ops = _backbone_ops(source, fmt)
    aspp, num_classes = _aspp_ops(source, "classifier.conv2d_list.", fmt)
    config = dict(backbone="resnet101", head="deeplabv2", num_classes=num_classes, embed_dim=256,
                  projection=None, classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    return Plan(config, ops + aspp, {}, [])


# ProDA's layer5 (models/deeplabv2.py:141-171, Classifier_Module2) is recognised by these keys.
PRODA_HEAD_KEYS = ("layer5.bottleneck.", "layer5.head.", "layer5.conv2d_list.0.0.")


def refuse_proda(source: Mapping[str, Tensor], fmt: str) -> None:
    """ConversionError when ``source`` holds ProDA's ``Classifier_Module2`` head."""
    if any(k.startswith(PRODA_HEAD_KEYS) for k in source):
        raise ConversionError(
            f"{fmt}: this is ProDA's head (layer5 = Classifier_Module2: 1x1 + four dilated Conv-GroupNorm branches, "
            f"SE block, 3x3 bottleneck, 'head' classifier; microsoft/ProDA models/deeplabv2.py:141-171), which "
            f"contraseg has no head for; only the plain 4-conv ASPP classifier (AdaptSegNet / FDA) converts")
