"""The ``loss:`` section: class-weighted cross-entropy and openseg's OHEM against plain
float64 loops (value and gradient), presets, and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.seg_loss import CLASS_WEIGHT_PRESETS, SegmentationLoss, resolve_class_weights
from contraseg.engine.trainer import Trainer

from helpers import tiny_config

IGNORE = 255


def _inputs(b=2, k=4, h=5, w=6, seed=0, ignore_frac=0.25):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, k, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < ignore_frac] = IGNORE
    return logits.requires_grad_(True), labels


def _pixels(logits, labels):
    """(-log p_y, p_y, y) of every labelled pixel, in a loop (floats)."""
    out = []
    b, k, h, w = logits.shape
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                c = int(labels[bi, y, x])
                if c == IGNORE:
                    continue
                scores = [float(logits[bi, j, y, x]) for j in range(k)]
                top = max(scores)
                log_z = top + math.log(sum(math.exp(s - top) for s in scores))
                out.append((log_z - scores[c], math.exp(scores[c] - log_z), c))
    return out


def reference_ce(logits, labels, weights):
    rows = _pixels(logits, labels)
    return sum(weights[c] * nll for nll, _, c in rows) / sum(weights[c] for _, _, c in rows)


def reference_ohem(logits, labels, weights, thresh, min_kept):
    """openseg's FSOhemCELoss rule written out (tfzhou/ContrastiveSeg@287e5d3,
    lib/loss/loss_helper.py:245-256)."""
    rows = _pixels(logits, labels)
    probs = sorted(p for _, p, _ in rows)
    threshold = max(probs[min(max(1, min_kept), len(probs) - 1)], thresh)
    kept = [weights[c] * nll for nll, p, c in rows if p < threshold]
    return sum(kept) / len(kept), len(kept)


def _grad(fn, logits):
    logits = logits.detach().clone().requires_grad_(True)
    fn(logits).backward()
    return logits.grad


def _numeric_grad(fn, logits, eps=1e-6):
    """Central differences of a float64 reference (its selection is locally constant)."""
    base = logits.detach().clone()
    grad = torch.zeros_like(base)
    flat = base.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + eps
        plus = fn(base)
        flat[i] = old - eps
        minus = fn(base)
        flat[i] = old
        grad.view(-1)[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 3.0]])
def test_weighted_ce_matches_the_formula_value_and_gradient(weights):
    logits, labels = _inputs(k=4)
    loss = SegmentationLoss("ce", weights, ignore_index=IGNORE)
    w = weights or [1.0] * 4
    assert float(loss(logits, labels)) == pytest.approx(reference_ce(logits, labels, w), rel=1e-9)
    got = _grad(lambda x: loss(x, labels), logits)
    expected = _numeric_grad(lambda x: reference_ce(x, labels, w), logits)
    assert torch.allclose(got, expected, atol=1e-6)


def test_class_weights_change_the_loss_as_the_formula_says():
    logits, labels = _inputs(k=4, seed=3)
    plain = float(SegmentationLoss("ce", None)(logits, labels))
    heavy = float(SegmentationLoss("ce", [1.0, 1.0, 1.0, 10.0])(logits, labels))
    rows = _pixels(logits, labels)
    mean_3 = sum(n for n, _, c in rows if c == 3) / sum(1 for _, _, c in rows if c == 3)
    # the weighted mean moves toward the mean loss of class 3
    assert abs(heavy - mean_3) < abs(plain - mean_3)
    assert heavy == pytest.approx(reference_ce(logits, labels, [1.0, 1.0, 1.0, 10.0]), rel=1e-9)


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 5), (0.3, 1), (0.9, 100000), (0.05, 20)])
@pytest.mark.parametrize("weights", [None, [0.8, 1.2, 1.0, 1.5]])
def test_ohem_matches_openseg_rule_value_and_gradient(thresh, min_kept, weights):
    logits, labels = _inputs(k=4, seed=1)
    loss = SegmentationLoss("ohem", weights, ohem_thresh=thresh, ohem_min_kept=min_kept, ignore_index=IGNORE)
    w = weights or [1.0] * 4
    expected, kept = reference_ohem(logits, labels, w, thresh, min_kept)
    assert float(loss(logits, labels)) == pytest.approx(expected, rel=1e-9)
    valid = int((labels != IGNORE).sum())
    assert kept >= min(min_kept, valid - 1)  # the min_kept lowest probabilities are kept (strict <)
    got = _grad(lambda x: loss(x, labels), logits)
    numeric = _numeric_grad(lambda x: reference_ohem(x, labels, w, thresh, min_kept)[0], logits)
    assert torch.allclose(got, numeric, atol=1e-6)


def test_ohem_keeps_only_hard_pixels():
    """A confident pixel (p > thresh) is dropped once min_kept is reached."""
    logits = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    logits[0, 0, 0, 0] = 10.0  # p(0) ~ 1: easy
    labels = torch.tensor([[[0, 1, 1]]])  # pixels 1, 2: p = 0.5
    loss = SegmentationLoss("ohem", ohem_thresh=0.7, ohem_min_kept=1)
    assert float(loss(logits, labels)) == pytest.approx(math.log(2.0))


def test_auxiliary_loss_is_weighted_ce_even_under_ohem():
    logits, labels = _inputs(k=4, seed=2)
    w = [0.8, 1.2, 1.0, 1.5]
    loss = SegmentationLoss("ohem", w, ohem_thresh=0.3, ohem_min_kept=1)
    assert float(loss.auxiliary(logits, labels)) == pytest.approx(reference_ce(logits, labels, w), rel=1e-9)
    assert float(loss(logits, labels)) != pytest.approx(reference_ce(logits, labels, w), rel=1e-3)


def test_no_labelled_pixel_gives_nan_as_cross_entropy_does():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2), IGNORE)
    for name in ("ce", "ohem"):
        assert math.isnan(float(SegmentationLoss(name)(logits, labels)))


def test_logits_are_upsampled_to_the_labels():
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 8, 8))
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    assert float(SegmentationLoss("ce")(logits, labels)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(up, labels)))


def test_openseg_cityscapes_preset():
    weights = resolve_class_weights("openseg_cityscapes", 19)
    assert len(weights) == 19 and weights[0] == 0.8373 and weights[17] == 1.1529 and weights[18] == 1.0507
    assert tuple(weights) == CLASS_WEIGHT_PRESETS["openseg_cityscapes"]


def test_class_weight_errors():
    with pytest.raises(ConfigError, match="config key loss.class_weights: unknown preset 'cityscape'"):
        config_from_dict(tiny_config(loss={"class_weights": "cityscape"}))
    with pytest.raises(ConfigError, match="loss.class_weights: expected null, a preset name or a list of numbers"):
        config_from_dict(tiny_config(loss={"class_weights": {"road": 1}}))
    with pytest.raises(ConfigError, match="loss.class_weights: class weights must be >= 0"):
        config_from_dict(tiny_config(loss={"class_weights": [1, -1]}))
    with pytest.raises(ConfigError, match="loss.name: 'focal' is not allowed"):
        config_from_dict(tiny_config(loss={"name": "focal"}))
    with pytest.raises(ConfigError, match="loss.ohem_thresh"):
        config_from_dict(tiny_config(loss={"ohem_thresh": 1.5}))


def test_class_weights_must_fit_the_training_set(tmp_path):
    """The tiny synthetic set has Cityscapes' 19 classes: a 4-long list and a preset
    on a dataset of another class count are one-line errors at build time."""
    with pytest.raises(ValueError, match="config key loss.class_weights: the list has 4 weights but the training "
                                         "set has 19 classes"):
        Trainer(config_from_dict(tiny_config(loss={"class_weights": [1.0, 1.0, 1.0, 2.0]})), tmp_path, progress=False)
    with pytest.raises(ValueError, match="preset 'openseg_cityscapes' has 19 weights but the training set has 4"):
        resolve_class_weights("openseg_cityscapes", 4)


def test_trainer_trains_with_the_configured_loss(tmp_path):
    cfg = config_from_dict(tiny_config(loss={"name": "ohem", "class_weights": "openseg_cityscapes",
                                             "ohem_min_kept": 50}))
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.seg_loss.name == "ohem" and trainer.seg_loss.class_weights.shape == (19,)
    assert trainer.fit()["iteration"] == 2


def test_aux_weight_key_and_default(tmp_path):
    """loss.aux_weight overrides the head's aux_loss_weight (0.4 as released); null keeps it."""
    from contraseg.engine.precision import resolve_precision
    from contraseg.engine.regulariser_terms import Regulariser
    from contraseg.engine.step import StepParts, training_step
    from contraseg.models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("resnet18", "ocr", num_classes=4, embed_dim=8, head_channels=16)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    results = {}
    for aux_weight in (None, 1.0):  # the OHEM main loss; the aux term is weighted CE
        state = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        parts = StepParts(model, model, Regulariser(), optimizer, resolve_precision("off", torch.device("cpu")),
                          aux_weight=aux_weight, seg_loss=SegmentationLoss("ohem", [1.0, 2.0, 1.0, 1.0]))
        model.eval()  # the same batch-norm statistics both times
        results[aux_weight] = training_step(parts, images, labels, 0)
        model.load_state_dict(state)
    assert model.aux_loss_weight == 0.4
    assert float(results[None]["aux_ce"]) == pytest.approx(0.4 * float(results[1.0]["aux_ce"]), rel=1e-5)
    out = {k: v.float() for k, v in model(images).items()}
    expected = SegmentationLoss("ce", [1.0, 2.0, 1.0, 1.0])(out["aux_logits"], labels)
    assert float(results[1.0]["aux_ce"]) == pytest.approx(float(expected), rel=1e-4)


def test_aux_weight_without_an_aux_head_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="config key loss.aux_weight: 0.4 is set but the model has no auxiliary head"):
        Trainer(config_from_dict(tiny_config(loss={"aux_weight": 0.4})), tmp_path, progress=False)
