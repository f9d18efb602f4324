"""Engine pieces: LR schedule, optimiser groups, sample stream, regularisers, precision,
run log, and a short end-to-end training run."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from contraseg.engine.config import Config, OptimConfig, RegulariserConfig, ScheduleConfig, config_from_dict
from contraseg.engine.config_io import merge_dicts
from contraseg.engine.optim import PolyLR, build_optimizer, head_lr_multiplier, split_parameters
from contraseg.engine.precision import resolve_precision
from contraseg.engine.regularisers import Regulariser, build_regulariser
from contraseg.engine.resume import resolve_resume
from contraseg.engine.run_log import RunLogger, json_safe, read_jsonl
from contraseg.engine.sampling import (
    InfiniteShardedSampler,
    SeededDataset,
    epoch_permutation,
    sample_seed,
    shard_indices,
)
from contraseg.engine.trainer import Trainer

from helpers import tiny_config as tiny_raw


def tiny_config(**sections) -> Config:
    """The shared tiny config with 8 training and 3 validation scenes, 3 iterations,
    logged, evaluated and saved every 2; ``sections`` merge on top."""
    base = tiny_raw(train_scenes=8, val_scenes=3, schedule={"max_iters": 3},
                    train={"log_interval": 2, "eval_interval": 2, "checkpoint_interval": 2})
    return config_from_dict(merge_dicts(base, sections))


# ------------------------------------------------------------------ schedule and optimiser
def test_poly_schedule_matches_formula_with_warmup():
    sched = PolyLR(ScheduleConfig(max_iters=100, power=0.9, warmup_iters=10, warmup_ratio=0.1))
    for it in (0, 5, 9, 10, 50, 99, 100, 150):
        poly = (1 - min(it, 100) / 100) ** 0.9
        ramp = 0.1 + 0.9 * it / 10 if it < 10 else 1.0
        assert sched.factor(it) == pytest.approx(poly * ramp, abs=1e-15)
    assert sched.factor(100) == 0.0
    no_warm = PolyLR(ScheduleConfig(max_iters=10, power=1.0))
    assert [no_warm.factor(i) for i in range(3)] == [1.0, 0.9, 0.8]
    with pytest.raises(ValueError, match="iteration must be >= 0, got -1"):
        sched.factor(-1)


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def param_groups(self):
        return {"backbone": list(self.backbone.parameters()), "head": list(self.head.parameters())}


def test_optimizer_groups_and_head_multiplier():
    model = TwoPart()
    sgd = build_optimizer(split_parameters(model), OptimConfig(name="sgd", lr=0.1, nesterov=True))
    assert [g["name"] for g in sgd.param_groups] == ["backbone", "head"]
    assert [g["base_lr"] for g in sgd.param_groups] == [0.1, pytest.approx(1.0)]  # head x10 by default
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(split_parameters(model), OptimConfig(name="adamw", lr=0.1, weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["base_lr"] for g in adamw.param_groups] == [0.1, 0.1]  # x1 for AdamW
    assert head_lr_multiplier(OptimConfig(name="adamw", head_lr_mult=4.0)) == 4.0
    PolyLR(ScheduleConfig(max_iters=4, power=1.0)).apply(sgd, 1)
    assert [g["lr"] for g in sgd.param_groups] == [pytest.approx(0.075), pytest.approx(0.75)]


def test_norm_and_bias_can_be_exempt_from_weight_decay():
    """decay_norm_and_bias=False: the 1-d parameters (biases, BatchNorm weights) of each group
    go into '<name>.no_decay' with weight decay 0 at the group's lr; a step leaves them
    undecayed where the matrices decay."""
    model = TwoPart()
    model.head = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    cfg = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.5, decay_norm_and_bias=False)
    sgd = build_optimizer(split_parameters(model), cfg)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in sgd.param_groups] == [
        ("backbone", 0.5, 1), ("backbone.no_decay", 0.0, 1), ("head", 0.5, 1), ("head.no_decay", 0.0, 3)]
    assert [g["base_lr"] for g in sgd.param_groups] == [0.1, 0.1, pytest.approx(1.0), pytest.approx(1.0)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sgd.step()
    for name, p in model.named_parameters():
        shrink = 1 - sgd.param_groups[0 if name.startswith("backbone") else 2]["lr"] * 0.5
        expected = before[name] * shrink if p.ndim > 1 else before[name]
        assert torch.allclose(p.detach(), expected), name
    default = build_optimizer(split_parameters(model), OptimConfig(name="sgd", lr=0.1, weight_decay=0.5))
    assert [(g["name"], g["weight_decay"]) for g in default.param_groups] == [("backbone", 0.5), ("head", 0.5)]


def test_split_parameters_checks_the_groups():
    model = TwoPart()
    model.param_groups = lambda: {"backbone": list(model.backbone.parameters()), "head": [model.head.weight]}
    with pytest.raises(ValueError, match="model.param_groups\\(\\) leaves out 1 trainable parameters"):
        split_parameters(model)
    model.param_groups = lambda: {"backbone": [model.head.bias], "head": list(model.head.parameters())}
    with pytest.raises(ValueError, match="a parameter is in both backbone and head"):
        split_parameters(model)
    model.param_groups = lambda: {"body": []}
    with pytest.raises(ValueError, match=r"must return keys backbone and head, got \['body'\]"):
        split_parameters(model)
    plain = nn.Linear(2, 2)
    assert split_parameters(plain) == {"backbone": [], "head": list(plain.parameters())}


# ------------------------------------------------------------------ sample stream
def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_stream_is_a_sequence_of_epoch_permutations():
    size, seed = 7, 3
    stream = take(iter(InfiniteShardedSampler(size, seed)), 3 * size)
    for epoch in range(3):
        indices = [i for i, _ in stream[epoch * size:(epoch + 1) * size]]
        assert sorted(indices) == list(range(size))
        assert indices == epoch_permutation(size, seed, epoch).tolist()
    assert [s for _, s in stream] == [sample_seed(seed, g) for g in range(3 * size)]
    assert len({s for _, s in stream}) == 3 * size  # every position has its own seed
    other = take(iter(InfiniteShardedSampler(size, seed + 1)), size)
    assert other != stream[:size]


def test_ranks_interleave_to_the_single_process_stream_and_resume_mid_epoch():
    size, seed, start = 5, 0, 3
    single = take(iter(InfiniteShardedSampler(size, seed)), 20)
    shards = [take(iter(InfiniteShardedSampler(size, seed, rank=r, world_size=2, start=start)), 6) for r in range(2)]
    merged = [shards[g % 2][g // 2] for g in range(12)]
    assert merged == single[start:start + 12]
    resumed = take(iter(InfiniteShardedSampler(size, seed, start=9)), 4)
    assert resumed == single[9:13]
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        InfiniteShardedSampler(5, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="size must be >= 1"):
        InfiniteShardedSampler(0, 0)


def test_eval_shards_are_disjoint_and_complete():
    shards = [shard_indices(7, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == list(range(7))


class RandomDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_dataset_makes_augmentation_a_function_of_the_seed():
    ds = SeededDataset(RandomDataset())
    torch.manual_seed(123)
    before = torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy()
    a, b, c = ds[(1, 42)], ds[(1, 42)], ds[(1, 43)]
    assert a == b and a != c and a[0] == 1
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])  # the caller's generators are untouched


# ------------------------------------------------------------------ regularisers
def fake_outputs(b=2, k=3, d=8, h=4, w=6, m=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"logits": torch.randn(b, k, h, w, generator=g),
           "embed": nn.functional.normalize(torch.randn(b, d, h, w, generator=g), dim=1).requires_grad_(True)}
    if m is not None:
        out["prototype_logits"] = torch.randn(b, k * m, h, w, generator=g)
    labels = torch.randint(0, k, (b, 2 * h, 2 * w), generator=g)
    labels[:, 0] = 255
    return out, labels


def test_weight_warms_up_linearly():
    reg = Regulariser(0.5, warmup_iters=4)
    assert [reg.weight_at(i) for i in range(6)] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    assert Regulariser(0.5).weight_at(0) == 0.5
    with pytest.raises(ValueError, match="weight, warmup_iters and start_iter must be >= 0, got -1.0, 0 and 0"):
        Regulariser(-1.0)


def test_none_and_proac_terms():
    from contraseg.losses import ProACLoss
    from contraseg.prototypes import hyperspherical_prototypes

    out, labels = fake_outputs()
    assert build_regulariser(RegulariserConfig(name="none"), 3, 8)(out, labels, 0) == {}
    reg = build_regulariser(RegulariserConfig(name="proac", warmup_iters=10, prototype_seed=1), 3, 8)
    assert reg.weight == 0.1 and reg.uses_embedding
    terms = reg(out, labels, iteration=5)
    expected = 0.05 * ProACLoss(hyperspherical_prototypes(3, 8, seed=1), temperature=0.1)(out["embed"], labels)
    assert list(terms) == ["proac"] and torch.allclose(terms["proac"], expected, atol=1e-6)
    terms["proac"].backward()
    assert out["embed"].grad is not None
    assert "loss.prototypes" in reg.state_dict()


def test_proac_prototypes_file_must_fit(tmp_path):
    from contraseg.prototypes import hyperspherical_prototypes, save_prototypes

    save_prototypes(tmp_path / "p.pt", hyperspherical_prototypes(4, 8))
    cfg = RegulariserConfig(name="proac", prototypes_file=str(tmp_path / "p.pt"))
    assert build_regulariser(cfg, 4, 8).loss.prototypes.shape == (4, 8)
    with pytest.raises(ValueError, match=r"p.pt: prototypes are \(4, 8\), the model needs 3 x 8"):
        build_regulariser(cfg, 3, 8)


def test_pixel_contrast_memory_enqueues_after_step_and_is_saved():
    cfg = RegulariserConfig(name="pixel_contrast_memory", memory_pixel_size=6, memory_segment_size=4,
                            max_samples=32, max_views=4)
    reg = build_regulariser(cfg, 3, 8)
    assert reg.name == "pixel_contrast_memory"
    out, labels = fake_outputs()
    terms = reg(out, labels, 0)
    assert list(terms) == ["contrast"] and torch.isfinite(terms["contrast"])
    assert len(reg.loss.memory) == 0
    reg.after_step(out, labels)
    assert len(reg.loss.memory) > 0
    state = reg.state_dict()
    assert state["loss.memory.pixel_queue"].shape == (3, 6, 8) and int(state["loss.memory.pixel_count"].sum()) > 0
    plain = build_regulariser(RegulariserConfig(name="pixel_contrast", max_samples=32, max_views=4), 3, 8)
    plain.after_step(out, labels)  # no memory: nothing to do
    assert torch.isfinite(plain(out, labels, 0)["contrast"])


def test_protoseg_terms_need_a_prototype_model():
    from contraseg.models import build_segmentor

    model = build_segmentor("resnet18", "mlp", num_classes=3, embed_dim=8, classifier="prototype", num_prototypes=2)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    labels = torch.randint(0, 3, (2, 32, 32))
    reg = build_regulariser(RegulariserConfig(name="protoseg"), 3, 8)
    before = model.prototype_head.bank.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    terms = reg(out, labels, 0, model)
    assert set(terms) == {"ppc", "ppd"} and all(torch.isfinite(v) for v in terms.values())
    changed = any(not torch.equal(before[k], v) for k, v in model.prototype_head.bank.state_dict().items())
    assert changed  # the momentum update ran
    with pytest.raises(ValueError, match="regulariser protoseg needs a segmentor built with classifier='prototype'"):
        reg(*fake_outputs(), 0, nn.Linear(1, 1))


# ------------------------------------------------------------------ precision
def test_precision_policy_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype is None and resolve_precision("off", cpu).name == "fp32"
    bf16 = resolve_precision("bf16", cpu)
    assert bf16.dtype == torch.bfloat16 and not bf16.scaler.is_enabled()
    with bf16.autocast():
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp: fp16 needs a CUDA device, got cpu; use bf16 or off"):
        resolve_precision("fp16", cpu)


# ------------------------------------------------------------------ run log
def test_run_log_writes_jsonl_and_truncates_on_resume(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False, progress=False)
    for it in (2, 4, 6):
        log.log_train(it, 0.1, {"loss": 1.0 / it, "ce": float("nan")}, 0.5)
    metrics = {"classes": ["a", "b"], "IoU": [0.5, None], "mIoU": 0.5, "mAcc": 0.6, "aAcc": 0.7}
    log.log_eval(4, "x/val", metrics)
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["iteration"] for r in records] == [2, 4, 6, 4]
    assert records[0]["ce"] is None and records[3]["IoU"] == {"a": 50.0, "b": None}  # JSON metrics in percent
    assert records[3]["unit"] == "%" and records[3]["mIoU"] == 50.0
    log.truncate_after(4)
    assert [(r["type"], r["iteration"]) for r in read_jsonl(tmp_path / "log.jsonl")] == [
        ("train", 2), ("train", 4), ("eval", 4)]
    silent = RunLogger(tmp_path / "other", enabled=False)
    silent.log_train(1, 0.1, {"loss": 1.0}, 0.1)
    assert not (tmp_path / "other").exists()
    assert json_safe({"a": [math.inf, 1.0]}) == {"a": [None, 1.0]}


def test_resolve_resume(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None
    (tmp_path / "last.pth").write_bytes(b"x")
    assert resolve_resume("auto", tmp_path) == tmp_path / "last.pth"
    with pytest.raises(FileNotFoundError, match="--resume: checkpoint not found: .*nope.pth"):
        resolve_resume(str(tmp_path / "nope.pth"), tmp_path)


# ------------------------------------------------------------------ end to end
def test_training_run_writes_logs_checkpoints_and_metrics(tmp_path):
    cfg = tiny_config(regulariser={"name": "proac", "warmup_iters": 2}, optim={"grad_clip": 1.0},
                      schedule={"max_iters": 3, "warmup_iters": 1})
    trainer = Trainer(cfg, tmp_path, progress=False)
    summary = trainer.fit()
    assert summary["iteration"] == 3
    records = read_jsonl(tmp_path / "log.jsonl")
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["iteration"] for r in train] == [2, 3] and [r["iteration"] for r in evals] == [2, 3]
    assert {"loss", "ce", "proac", "lr", "time", "reg_weight"} <= set(train[0])
    assert train[0]["reg_weight"] == pytest.approx(0.05)  # iteration index 1 of a 2-iteration ramp
    assert train[0]["loss"] == pytest.approx(train[0]["ce"] + train[0]["proac"], rel=1e-5)
    assert evals[0]["dataset"] == "synthetic-target/val" and len(evals[0]["IoU"]) == 19
    assert (tmp_path / "last.pth").is_file() and (tmp_path / "best.pth").is_file()
    assert (tmp_path / "config.yaml").is_file()
    stored = json.loads((tmp_path / "eval" / "iter_00000003.json").read_text())
    assert stored["unit"] == "%" and stored["results"]["synthetic-target/val"]["mIoU"] == pytest.approx(
        100 * summary["last_eval"]["synthetic-target/val"]["mIoU"], abs=1e-4)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["iteration"] == 3 and state["sampler"]["position"] == 6
    assert state["best"]["iteration"] in (2, 3)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 - 2 / 3) ** 0.9)


def test_bf16_autocast_training_on_cpu(tmp_path):
    cfg = tiny_config(train={"amp": "bf16", "eval_interval": 100, "checkpoint_interval": 100},
                      schedule={"max_iters": 2}, regulariser={"name": "proac"})
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.precision.dtype == torch.bfloat16
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    terms = trainer.train_step(next(iter(trainer._loader())))
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])  # losses run in float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # weights stay float32
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_tensorboard_scalars_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    log = RunLogger(tmp_path, tensorboard=True, progress=False)
    log.log_train(1, 0.1, {"loss": 1.0}, 0.5)
    log.log_eval(1, "x/val", {"classes": ["a"], "IoU": [0.5], "mIoU": 0.5, "mAcc": 0.5, "aAcc": 0.5})
    log.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/lr", "train/loss", "eval/x/val/mIoU"} <= set(events.Tags()["scalars"])
    assert events.Scalars("train/loss")[0].value == 1.0
