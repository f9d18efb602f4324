"""Issue 18, engine side: the regulariser's hard start, the poly horizon and warm-up (every
trainer), the fp16 GradScaler, the bank options of the regulariser table and the recipe
section with its batch line."""

from __future__ import annotations

import pytest
import torch

from contraseg.engine.config import ConfigError, ScheduleConfig, config_from_dict
from contraseg.engine.optim import PolyLR
from contraseg.engine.precision import Precision, resolve_precision
from contraseg.engine.recipe_sections import batch_summary
from contraseg.engine.regularisers import build_regulariser
from contraseg.engine.run_log import read_jsonl
from contraseg.engine.trainer import Trainer

from helpers import random_batch, tiny_config


def _train_records(tmp_path, **sections):
    cfg = config_from_dict(tiny_config(**sections))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.fit()
    return trainer, [r for r in read_jsonl(tmp_path / "log.jsonl") if r["type"] == "train"]


# --------------------------------------------------------------------------- hard start

@pytest.mark.parametrize("start, ramp", [(0, 0), (3, 0), (3, 4), (5, 2)])
def test_weight_at_is_zero_before_the_start_then_the_ramp(start, ramp):
    cfg = config_from_dict(tiny_config(regulariser={"name": "pixel_contrast", "weight": 0.5, "start_iter": start,
                                                    "warmup_iters": ramp})).regulariser
    reg = build_regulariser(cfg, num_classes=4, embed_dim=8)
    for i in range(12):
        expected = 0.0 if i < start else 0.5 * (1.0 if ramp == 0 else min(1.0, (i - start) / ramp))
        assert reg.weight_at(i) == pytest.approx(expected)


def test_hard_start_in_a_training_loop(tmp_path):
    """ContrastiveSeg's convention: the contrast is added from the 0-based iteration
    start_iter on (``iters >= warmup_iters``, iters starting at 0). The logged record of
    iteration n (1-based count of steps) is the step of 0-based iteration n - 1."""
    _, records = _train_records(tmp_path, regulariser={"name": "pixel_contrast", "weight": 0.1, "start_iter": 2,
                                                             "max_views": 2, "max_samples": 32},
                                schedule={"max_iters": 4}, train={"eval_interval": 4, "checkpoint_interval": 4})
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert [r["reg_weight"] for r in records] == [0.0, 0.0, 0.1, 0.1]
    assert records[0]["contrast"] == 0.0 and records[1]["contrast"] == 0.0
    assert records[2]["contrast"] > 0.0 and records[3]["contrast"] > 0.0
    for r in records:  # loss = ce + weighted contrast, the contrast term as logged
        assert r["loss"] == pytest.approx(r["ce"] + r["contrast"], rel=1e-5, abs=1e-6)


def test_memory_bank_is_filled_before_the_start():
    """As released (the memory model returns key / lb_key whenever it trains and the
    trainer enqueues them every step), the bank is filled while the weight is still 0."""
    cfg = config_from_dict(tiny_config(regulariser={"name": "pixel_contrast_memory", "start_iter": 100,
                                                    "memory_pixel_size": 6, "memory_segment_size": 3,
                                                    "memory_pixels_per_update": 2})).regulariser
    reg = build_regulariser(cfg, num_classes=4, embed_dim=8)
    emb, labels = random_batch(b=2, d=8, h=5, w=6, k=4, dtype=torch.float32)
    outputs = {"embed": emb, "logits": torch.randn(2, 4, 5, 6)}
    terms = reg(outputs, labels, iteration=0)
    assert float(terms["contrast"].detach()) == 0.0
    reg.after_step(outputs, labels)
    bank = reg.loss.memory
    assert bank.pixels_per_image == 2
    present = [c for c in range(4) if bool((labels == c).any())]
    # at most 2 pixels per (image, class) pair: 2 images -> at most 4 per class
    assert all(0 < int(bank.pixel_count[c]) <= 4 for c in present)


def test_start_iter_is_checked():
    with pytest.raises(ConfigError, match="regulariser.start_iter"):
        config_from_dict(tiny_config(regulariser={"start_iter": -1}))


# --------------------------------------------------------------------------- bank options

def test_protoseg_bank_options_reach_the_prototype_bank():
    from contraseg.models import build_segmentor

    raw = tiny_config(model={"classifier": "prototype"},
                      regulariser={"name": "protoseg", "prototype_momentum": 0.5, "sinkhorn_iters": 7,
                                   "sinkhorn_epsilon": 0.2})
    cfg = config_from_dict(raw)
    model = build_segmentor("resnet18", "mlp", num_classes=4, embed_dim=16, classifier="prototype")
    reg = build_regulariser(cfg.regulariser, num_classes=4, embed_dim=16)
    out = model(torch.randn(2, 3, 32, 32))
    labels = torch.randint(0, 4, (2, 32, 32))
    reg(out, labels, 0, model)
    bank = model.prototype_head.bank
    assert (bank.momentum, bank.sinkhorn_iterations, bank.sinkhorn_epsilon) == (0.5, 7, 0.2)
    with pytest.raises(ConfigError, match="prototype_momentum"):
        config_from_dict(tiny_config(regulariser={"prototype_momentum": 1.5}))


def test_bank_option_defaults_are_the_constructors():
    from contraseg.prototypes.bank import PrototypeBank
    from contraseg.sampling.memory_bank import PixelMemoryBank

    reg = config_from_dict(tiny_config()).regulariser
    bank = PrototypeBank(2, 2, 4)
    assert (reg.prototype_momentum, reg.sinkhorn_iters, reg.sinkhorn_epsilon) == (
        bank.momentum, bank.sinkhorn_iterations, bank.sinkhorn_epsilon) == (0.999, 3, 0.05)
    assert reg.memory_pixels_per_update == PixelMemoryBank(2, 4).pixels_per_image == 10


# --------------------------------------------------------------------------- schedule

def _poly(it, base_factor_horizon, power=0.9):
    return (1.0 - min(it, base_factor_horizon) / base_factor_horizon) ** power


def test_poly_horizon_differs_from_max_iters():
    """ProAC: horizon 62500, training stops at 40000 (final factor (1 - 0.64) ** 0.9)."""
    schedule = PolyLR(ScheduleConfig(max_iters=40000, poly_iters=62500))
    for it in (0, 1, 12345, 39999):
        assert schedule.factor(it) == pytest.approx(_poly(it, 62500))
    assert schedule.factor(39999) == pytest.approx(0.3984, abs=1e-3)
    plain = PolyLR(ScheduleConfig(max_iters=100))
    assert plain.factor(50) == pytest.approx(_poly(50, 100)) and plain.factor(100) == 0.0
    shorter = PolyLR(ScheduleConfig(max_iters=100, poly_iters=50))  # a horizon before the end: 0 after it
    assert shorter.factor(60) == 0.0


def test_poly_iters_is_checked():
    with pytest.raises(ConfigError, match="schedule.poly_iters"):
        config_from_dict(tiny_config(schedule={"poly_iters": 0}))


def _expected_lr(base, it, warmup, ratio, horizon):
    ramp = ratio + (1 - ratio) * it / warmup if it < warmup else 1.0
    return base * _poly(it, horizon) * ramp


def test_warmup_and_horizon_in_the_engine_loop(tmp_path):
    _, records = _train_records(tmp_path, schedule={"max_iters": 4, "poly_iters": 10, "warmup_iters": 2,
                                                    "warmup_ratio": 0.1},
                                optim={"lr": 0.01}, train={"eval_interval": 4, "checkpoint_interval": 4})
    for r in records:  # the first group (backbone) at lr
        assert r["lr"] == pytest.approx(_expected_lr(0.01, r["iteration"] - 1, 2, 0.1, 10))


def test_warmup_in_an_adaptation_trainer(tmp_path):
    """Every adaptation trainer runs the engine's loop (its ``fit`` / ``_fit``, which sets
    the lr from the schedule each step) and builds the engine's schedule; source-only
    fine-tuning is run here and its logged lr checked against the formula."""
    from contraseg.adapt.config import adapt_section
    from contraseg.adapt.methods import method_names, trainer_class
    from contraseg.adapt.run import build_adapt_trainer

    for name in method_names():
        cls = trainer_class(name)
        assert cls.fit is Trainer.fit and cls._fit is Trainer._fit, name
    cfg = config_from_dict(tiny_config(schedule={"max_iters": 3, "poly_iters": 8, "warmup_iters": 2,
                                                 "warmup_ratio": 0.25},
                                       train={"eval_interval": 3, "checkpoint_interval": 3},
                                       adapt={"method": "source_only"}))
    trainer = build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / "run", progress=False)
    assert trainer.fit()["iteration"] == 3
    records = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for r in records:
        assert r["lr"] == pytest.approx(_expected_lr(0.01, r["iteration"] - 1, 2, 0.25, 8))


def test_adaptation_methods_with_their_own_cross_entropy_refuse_a_loss_section(tmp_path):
    from contraseg.adapt.config import adapt_section
    from contraseg.adapt.run import build_adapt_trainer

    cfg = config_from_dict(tiny_config(loss={"class_weights": [1.0, 2.0, 1.0, 1.0]},
                                       adapt={"method": "wdass", "wdass": {"weak_labels": str(tmp_path)}}))
    with pytest.raises(ValueError, match="config key loss: adaptation method wdass computes its own"):
        build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / "run", progress=False)


# --------------------------------------------------------------------------- precision

def test_fp16_builds_a_grad_scaler_bf16_and_off_do_not(monkeypatch):
    """ProtoSeg released fp16 autocast + GradScaler (tfzhou/ProtoSeg@1c4a778,
    segmentor/trainer.py:156 and :182). Without CUDA here, the construction is checked
    with torch told that CUDA exists (the scaler is built lazily, nothing runs on CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fp16 = resolve_precision("fp16", torch.device("cuda"))
    assert fp16.dtype == torch.float16 and isinstance(fp16.scaler, torch.amp.GradScaler)
    assert fp16.scaler.is_enabled() and "scale" in fp16.scaler.state_dict()
    for amp, dtype in (("bf16", torch.bfloat16), ("off", None)):
        other = resolve_precision(amp, torch.device("cpu"))
        assert other.dtype == dtype and not other.scaler.is_enabled()
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_scaler_state_is_saved_and_restored(tmp_path):
    """A live GradScaler (a CPU one stands in for CUDA's) goes into last.pth and comes back on resume."""
    from contraseg.engine.checkpoint import load_checkpoint

    cfg = config_from_dict(tiny_config(train={"amp": "off"}))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.precision = Precision("cpu", None, torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1))
    trainer.fit()
    saved = load_checkpoint(tmp_path / "last.pth")["scaler"]
    assert saved["scale"] == trainer.precision.scaler.get_scale() and saved["growth_interval"] == 1
    assert saved["scale"] != 256.0  # it grew (or backed off) during the two steps
    resumed = Trainer(config_from_dict(tiny_config(train={"amp": "off"}, schedule={"max_iters": 3})), tmp_path,
                      resume="auto", progress=False, resume_changed=True)
    resumed.precision.scaler = torch.amp.GradScaler("cpu")
    resumed._load_training_state(tmp_path / "last.pth")
    assert resumed.precision.scaler.get_scale() == saved["scale"]


# --------------------------------------------------------------------------- recipe

RECIPE = {"paper": "ContrastiveSeg", "experiment": "HRNet-W48", "world_size": 4, "total_batch_size": 8,
          "source": "configs/cityscapes/H_48_D_4.json"}


def test_recipe_total_batch_is_checked():
    cfg = config_from_dict(tiny_config(recipe=RECIPE))  # 2 per process x 4
    assert cfg.recipe.total_batch_size == 8
    with pytest.raises(ConfigError, match=r"recipe.total_batch_size: 8 != data.batch_size 2 x recipe.world_size 2"):
        config_from_dict(tiny_config(recipe={**RECIPE, "world_size": 2}))
    with pytest.raises(ConfigError, match="unknown config key recipe.gpus"):
        config_from_dict(tiny_config(recipe={**RECIPE, "gpus": 4}))


def test_batch_summary_lines():
    cfg = config_from_dict(tiny_config(recipe=RECIPE))
    assert batch_summary(cfg, 1) == ("total batch 2 = 2 x 1 process; recipe ContrastiveSeg HRNet-W48: 8 = 2 x 4 GPUs "
                                     "(differs: 2 vs 8 images per iteration)")
    assert batch_summary(cfg, 4) == "total batch 8 = 2 x 4 processes, as the recipe ContrastiveSeg HRNet-W48: 8 = 2 x 4 GPUs"
    assert batch_summary(config_from_dict(tiny_config()), 1) == "total batch 2 = 2 x 1 process (no recipe section)"


def test_trainer_first_line_is_the_batch(tmp_path, capsys):
    Trainer(config_from_dict(tiny_config(recipe=RECIPE)), tmp_path, progress=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("total batch 2 = 2 x 1 process; recipe ContrastiveSeg HRNet-W48: 8 = 2 x 4 GPUs")
