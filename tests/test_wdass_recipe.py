"""WDASS recipe switches (issue 18): the edge loss and the prototype image loss against plain
references (forward and gradient), the ignored pseudo-label rows, the hard start of the
image-level and contrast terms, the config keys, and WDASS trainer steps with all of them on."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from contraseg.adapt.run import build_adapt_trainer
from contraseg.adapt.wdass_trainer import WDASSTrainer, ignore_rows
from contraseg.engine.config import ConfigError
from contraseg.losses import ImageLevelLoss, WDASSEdgeLoss, prototype_logits

from test_adapt_training import load, raw_config, wdass_adapt
from test_adapt_training import source_checkpoint, weak_labels  # noqa: F401 - pytest fixtures


# ------------------------------------------------------------------ edge loss
def _reference_edge(logits, labels, uniform, tau=0.5, ignore=255):
    """Plain loops over pixels, following loss/edgeloss.py:291-325 step by step."""
    b, k, h, w = logits.shape
    eps = 1e-10

    def magnitude(maps):  # maps: nested [b][k][i][j] of scalars
        values = []
        for n in range(b):
            for c in range(k):
                for i in range(h):
                    for j in range(w):
                        right = maps[n][c][i][j + 1] if j + 1 < w else 0.0
                        left = maps[n][c][i][j - 1] if j - 1 >= 0 else 0.0
                        down = maps[n][c][i + 1][j] if i + 1 < h else 0.0
                        up = maps[n][c][i - 1][j] if i - 1 >= 0 else 0.0
                        dx, dy = 0.5 * (right - left), 0.5 * (down - up)
                        values.append(torch.sqrt(dx * dx + dy * dy + 1e-6))
        values = torch.stack(values)
        return (values / values.max()).reshape(b, -1)

    soft = [[[[None] * w for _ in range(h)] for _ in range(k)] for _ in range(b)]
    onehot = [[[[0.0] * w for _ in range(h)] for _ in range(k)] for _ in range(b)]
    for n in range(b):
        for i in range(h):
            for j in range(w):
                ignored = int(labels[n, i, j]) == ignore
                cls = 0 if ignored else int(labels[n, i, j])
                onehot[n][cls][i][j] = 1.0
                scores = []
                for c in range(k):
                    z = logits[n, c, i, j] * 0 if ignored else logits[n, c, i, j]
                    g = -torch.log(eps - torch.log(uniform[n, c, i, j] + eps))
                    scores.append((z + g) / tau)
                scores = torch.stack(scores)
                probs = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
                for c in range(k):
                    soft[n][c][i][j] = probs[c]
    onehot = [[[[torch.tensor(v, dtype=logits.dtype) for v in row] for row in ch] for ch in img] for img in onehot]
    p, q = magnitude(soft), magnitude(onehot)
    each = (p - q).abs()
    mp, mq = (p >= 1e-8).double(), (q >= 1e-8).double()
    return 0.5 * (each * mp).sum() / (mp.sum() + eps) + 0.5 * (each * mq).sum() / (mq.sum() + eps)


def test_edge_loss_matches_the_plain_reference_forward_and_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 6), generator=g)
    labels[0, 1:3, 2:4] = 255
    uniform = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    value = WDASSEdgeLoss()(logits, labels, uniform)
    (grad,) = torch.autograd.grad(value, logits)
    reference = _reference_edge(logits, labels, uniform)
    (ref_grad,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(value, reference, rtol=1e-9, atol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-10)
    assert grad.abs().sum() > 0 and (grad[0, :, 1:3, 2:4] == 0).all()  # ignored pixels: logits replaced by 0


def test_edge_loss_edge_cases():
    labels = torch.zeros(1, 6, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = 200.0 * torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).double()
    uniform = torch.full((1, 2, 6, 8), 0.5, dtype=torch.float64)
    assert float(WDASSEdgeLoss()(logits, labels, uniform)) < 1e-9  # a perfect, confident prediction
    swapped = torch.zeros_like(labels)
    swapped[:, 3:] = 1  # a horizontal boundary where the prediction has a vertical one
    assert float(WDASSEdgeLoss()(logits, swapped, uniform)) > 0.1
    flipped = 200.0 * torch.nn.functional.one_hot(1 - labels, 2).permute(0, 3, 1, 2).double()
    assert float(WDASSEdgeLoss()(flipped, labels, uniform)) > 0.1  # zero padding: the image border is an edge
    seeded = [float(WDASSEdgeLoss()(logits * 0.01, labels, generator=torch.Generator().manual_seed(1)))
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\) or 255"):
        WDASSEdgeLoss()(logits, labels + 5)
    with pytest.raises(ValueError, match="at least 2 x 2"):
        WDASSEdgeLoss()(logits[..., :1, :], labels[:, :1])


# ------------------------------------------------------------------ prototype image loss
def test_prototype_image_loss_matches_the_plain_reference():
    g = torch.Generator().manual_seed(2)
    embed = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(3, 4, generator=g, dtype=torch.float64)
    presence = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    value = ImageLevelLoss()(prototype_logits(embed, protos), presence)
    terms = []
    for b in range(2):
        for k in range(3):
            scores = torch.stack([sum(embed[b, d, i, j] * protos[k, d] for d in range(4))
                                  for i in range(3) for j in range(5)])
            pooled = torch.log(torch.exp(scores).sum()) - math.log(15)  # train.py:475 + image_label.py:45-49
            p = 1 / (1 + torch.exp(-pooled))
            terms.append(-(presence[b, k] * torch.log(p) + (1 - presence[b, k]) * torch.log(1 - p)))
    reference = torch.stack(terms).mean()
    assert torch.allclose(value, reference, rtol=1e-9)
    (grad,) = torch.autograd.grad(value, embed)
    (ref_grad,) = torch.autograd.grad(reference, embed)
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValueError, match="same D"):
        prototype_logits(embed, protos[:, :3])


# ------------------------------------------------------------------ rows and start
def test_ignore_rows_zero_the_top_and_bottom_rows_only():
    weights = torch.rand(2, 10, 4) + 0.1
    out = ignore_rows(weights, 2, 3)
    assert (out[:, :2] == 0).all() and (out[:, -3:] == 0).all() and torch.equal(out[:, 2:7], weights[:, 2:7])
    assert (weights > 0).all()  # the input is not changed
    assert ignore_rows(weights, 0, 0) is weights
    assert torch.equal(ignore_rows(weights, 0, 1)[:, :9], weights[:, :9])


@pytest.mark.parametrize("start, warmup, expected", [
    (10001, 0, {0: 0.0, 10000: 0.0, 10001: 1.0, 20000: 1.0}),  # released: itern > 10000 (train.py:483)
    (10, 4, {9: 0.0, 10: 0.0, 12: 0.5, 14: 1.0, 30: 1.0}),
    (0, 4, {0: 0.0, 2: 0.5, 4: 1.0}),  # the earlier ramp, unchanged
    (0, 0, {0: 1.0}),
])
def test_image_and_contrast_gate(start, warmup, expected):
    for iteration, weight in expected.items():
        fake = SimpleNamespace(adapt=SimpleNamespace(wdass=SimpleNamespace(start_iter=start, warmup_iters=warmup)),
                               iteration=iteration)
        assert WDASSTrainer.ramp(fake) == weight


def test_bad_ignore_rows_is_a_one_line_error(tmp_path):
    raw = raw_config({"method": "wdass", "wdass": {"weak_labels": "x"}, "teacher": {"ignore_rows": [20, 12]}})
    with pytest.raises(ConfigError, match=r"adapt.teacher.ignore_rows: 20 \+ 12 rows leave nothing of the 32-row"):
        load(tmp_path, raw)
    with pytest.raises(ConfigError, match="adapt.teacher.ignore_rows"):
        load(tmp_path, raw_config({"method": "wdass", "wdass": {"weak_labels": "x"},
                                   "teacher": {"ignore_rows": [1]}}))


# ------------------------------------------------------------------ trainer
_LOW = ("adapt.teacher.threshold=0.05", "adapt.wdass.prototype_threshold=0.05", "adapt.wdass.max_views=2",
        "adapt.wdass.cross_threshold=0.05", "adapt.wdass.intra_threshold=0.05")


def _trainer(tmp_path, weak_labels, source_checkpoint, kind, rows, teacher=None, optim=None, forward="joint", **data):
    adapt = wdass_adapt(weak_labels, kind, source_checkpoint, start_iter=1, edge_weight=10.0,
                        prototype_image_loss=True)
    adapt["teacher"] = {"ignore_rows": rows, **(teacher or {})}
    adapt["forward"] = forward
    raw = raw_config(adapt, schedule={"max_iters": 2, "warmup_iters": 1}, data=data, optim=optim or {})
    cfg, parsed = load(tmp_path, raw, *_LOW)
    return build_adapt_trainer(cfg, parsed, tmp_path / "run", progress=False)


@pytest.mark.parametrize("kind", ["point", "image"])
def test_wdass_steps_with_every_recipe_switch(tmp_path, weak_labels, source_checkpoint, kind, monkeypatch):
    import contraseg.adapt.wdass_trainer as module

    seen = []
    original = module.weighted_cross_entropy
    monkeypatch.setattr(module, "weighted_cross_entropy",
                        lambda logits, labels, weights, ignore, **kw: seen.append(weights) or original(
                            logits, labels, weights, ignore, **kw))
    runs = {}
    for rows in ([0, 0], [3, 5]):
        (tmp_path / str(rows[0])).mkdir()
        trainer = _trainer(tmp_path / str(rows[0]), weak_labels, source_checkpoint, kind, rows)
        batch = next(iter(trainer._loader()))
        history = []
        for _ in range(2):
            history.append(trainer.train_step(batch))
            trainer.iteration += 1
        runs[rows[0]] = history
    history = runs[3]
    assert all(torch.isfinite(v) for step in history for v in step.values())
    assert history[0]["image"] == 0 and history[0]["contrast"] == 0 and history[0]["image_proto"] == 0
    assert history[1]["image"] > 0 and history[1]["image_proto"] > 0  # full weight from start_iter 1
    assert history[0]["edge"] > 0 and history[1]["edge"] > 0
    plain, cut = seen[0], seen[2]  # first steps of the two runs: same masks, same teacher
    assert torch.equal(plain[:, 3:-5], cut[:, 3:-5])
    for rows in (cut[:, :3], cut[:, -5:]):
        assert ((rows == 0) | (rows == 1)).all()  # target pixels 0, source pixels 1
    assert (cut[:, :3] <= plain[:, :3]).all() and (cut[:, -5:] <= plain[:, -5:]).all()
    assert (cut[:, :3] < plain[:, :3]).any() and (cut[:, -5:] < plain[:, -5:]).any()  # target pixels were weighted


def test_wdass_two_iteration_run_with_recipe_data_keys_and_lr_warmup(tmp_path, weak_labels, source_checkpoint):
    trainer = _trainer(tmp_path, weak_labels, source_checkpoint, "coarse", [2, 4],
                       teacher={"warm_start": False, "batch_norm": "batch"}, optim={"decay_norm_and_bias": False},
                       forward="separate",
                       aspect_range=[0.9, 1.1], brightness_shift=10, hue_jitter=0.25, scale_to_width=64)
    assert trainer.target_set.dataset.transform.scale_to_width == 64
    # the released recipe's teacher (fixed momentum, train-mode BatchNorm), weight-decay groups, one forward per part
    assert trainer.adapt.forward == "separate"
    assert (trainer.teacher.warm_start, trainer.teacher.batch_norm, trainer.teacher.model.training) == (False, "batch", True)
    assert {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups}["head.no_decay"] == 0.0
    lrs = []
    step = trainer.train_step
    trainer.train_step = lambda batch: lrs.append(trainer.optimizer.param_groups[0]["lr"]) or step(batch)
    trainer.fit()
    assert trainer.iteration == 2 and (tmp_path / "run" / "last.pth").exists()
    base = trainer.optimizer.param_groups[0]["base_lr"]
    assert lrs[0] < 1e-3 * base and lrs[1] > 0.3 * base  # schedule.warmup_iters 1: the adapt loop warms up


def test_separate_forwards_normalise_each_part_with_its_own_statistics():
    """adapt.forward: separate runs the model once per part (BatchNorm in train mode sees each
    part's own batch statistics) and concatenates the outputs in order; joint is one forward."""
    from types import SimpleNamespace

    from contraseg.adapt.trainer import AdaptTrainer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).train()
    parts = [torch.randn(2, 3, 4, 4) + 3.0, torch.randn(3, 3, 4, 4)]
    stub = SimpleNamespace(adapt=SimpleNamespace(forward="separate"), forward_float=lambda x: {"logits": net(x)})
    separate = AdaptTrainer.forward_parts(stub, parts)["logits"]
    assert torch.allclose(separate, torch.cat([net(parts[0]), net(parts[1])]), atol=1e-6)
    stub.adapt.forward = "joint"
    joint = AdaptTrainer.forward_parts(stub, parts)["logits"]
    assert torch.allclose(joint, net(torch.cat(parts)), atol=1e-6)
    assert not torch.allclose(joint, separate, atol=1e-2)
