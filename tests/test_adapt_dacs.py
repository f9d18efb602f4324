"""DACS / DAFormer self-training (adapt.method: dacs): the pseudo-label weight and the
rare-class probabilities against hand-computed values, the rare-class stream, and
2-iteration runs with every part on and off."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.adapt.config import adapt_section
from contraseg.adapt.dacs_config import DACSConfig
from contraseg.adapt.dacs_trainer import confident_fraction
from contraseg.adapt.rare_class import (
    RELEASED_MIN_PIXELS,
    RELEASED_TEMPERATURE,
    RareClassSampler,
    images_with_class,
    rare_class_probabilities,
)
from contraseg.adapt.run import build_adapt_trainer
from contraseg.engine.config import config_from_dict
from contraseg.engine.run_log import read_jsonl

from helpers import tiny_config, tiny_dataset


def test_dacs_weight_is_the_confident_fraction_of_the_batch():
    confidence = torch.tensor([[[0.97, 0.5], [0.968, 0.1]], [[0.99, 0.2], [0.3, 0.967]]])
    assert float(confident_fraction(confidence, 0.968)) == pytest.approx(3 / 8)  # 0.97, 0.968, 0.99
    assert float(confident_fraction(confidence, 1.0)) == 0.0
    assert float(confident_fraction(confidence, 0.0)) == 1.0


def test_rare_class_probabilities_by_hand():
    counts = torch.tensor([0, 100, 300, 600])  # class 0 absent: left out
    classes, p = rare_class_probabilities(counts, temperature=0.1)
    assert classes == [1, 2, 3]  # increasing pixel count, as released
    # f = 0.1, 0.3, 0.6 -> (1 - f) / T = 9, 7, 4 -> e^9, e^7, e^4 = 8103.084, 1096.633, 54.598 (sum 9254.315)
    assert p.tolist() == pytest.approx([0.875601, 0.118500, 0.005900], abs=2e-6)
    _, p = rare_class_probabilities(counts, temperature=RELEASED_TEMPERATURE)  # exponents 90, 70, 40
    assert float(p[0]) == pytest.approx(1 - math.exp(-20), abs=1e-12) and float(p[2]) < 1e-21
    _, equal = rare_class_probabilities(torch.tensor([5, 5]), 0.01)
    assert equal.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rare_class_probabilities(counts, 0.0)


def test_images_with_class_and_the_sampler_follow_the_probabilities():
    pixel_counts = torch.tensor([[10, 0, 0], [5, 3, 0], [0, 9, 1], [7, 0, 2]])
    images = images_with_class(pixel_counts, [0, 1, 2], min_pixels=0)
    assert images == {0: [0, 1, 3], 1: [1, 2], 2: [2, 3]}
    with pytest.raises(ValueError, match="no source image has more than 2 pixels of class 2"):
        images_with_class(pixel_counts, [2], min_pixels=2)
    probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    sampler = RareClassSampler([0, 1, 2], probs, images, seed=3)
    draws = [sampler.draw(p) for p in range(6000)]
    # P(image) = sum over its classes of P(c) / #images of c: 0: .2, 1: .2 + .15, 2: .15 + .05, 3: .2 + .05
    for index, expected in enumerate([0.2, 0.35, 0.2, 0.25]):
        assert draws.count(index) / len(draws) == pytest.approx(expected, abs=0.025)
    stream = iter(RareClassSampler([0, 1, 2], probs, images, seed=3, rank=1, world_size=2, start=10))
    firsts = [next(stream) for _ in range(3)]
    assert [i for i, _ in firsts] == [draws[11], draws[13], draws[15]]  # positions start + rank, + world
    assert len({s for _, s in firsts}) == 3


def test_config_defaults_are_the_released_values():
    cfg = DACSConfig()
    assert (cfg.rcs_temperature, cfg.rcs_min_pixels, cfg.jitter_strength) == (RELEASED_TEMPERATURE,
                                                                              RELEASED_MIN_PIXELS, 0.2)
    assert cfg.teacher and cfg.mix and cfg.confidence_weight and cfg.rare_class_sampling and cfg.photometric


def _trainer(tmp_path, name, dacs, teacher=None):
    raw = tiny_config(adapt={"method": "dacs", "target": tiny_dataset("synthetic-target", "train", 4),
                             "dacs": {"rcs_min_pixels": 0, **dacs}, "teacher": teacher or {"momentum": 0.99}})
    cfg = config_from_dict(raw)
    return build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / name, progress=False)


def test_dacs_trains_with_every_part_on(tmp_path, capsys):
    trainer = _trainer(tmp_path, "on", {})
    assert "rare-class sampling (T 0.01): class probabilities" in capsys.readouterr().out
    assert trainer.fit()["iteration"] == 2
    train = [r for r in read_jsonl(tmp_path / "on" / "log.jsonl") if r["type"] == "train"]
    for record in train:
        assert 0 <= record["confident"] <= 1 and record["loss"] == pytest.approx(
            record["ce_source"] + record["ce_mix"], rel=1e-5)
    student = dict(trainer.model.named_parameters())
    moved = [name for name, p in trainer.teacher.model.named_parameters() if not torch.equal(p, student[name])]
    assert moved  # the teacher is an average, not the student
    assert "teacher" in trainer.adapt_state_dict()


def test_dacs_with_every_part_off_and_no_confident_pixel(tmp_path):
    trainer = _trainer(tmp_path, "off", {"teacher": False, "mix": False, "photometric": False,
                                         "rare_class_sampling": False}, teacher={"threshold": 1.0})
    assert trainer.teacher is None and trainer.rcs is None
    trainer.fit()
    train = [r for r in read_jsonl(tmp_path / "off" / "log.jsonl") if r["type"] == "train"]
    assert all(r["confident"] == 0.0 and r["ce_mix"] == 0.0 for r in train)  # weight q = 0: no target term
    trainer = _trainer(tmp_path, "unweighted", {"confidence_weight": False, "mix": False, "photometric": False,
                                                "rare_class_sampling": False}, teacher={"threshold": 1.0})
    trainer.fit()
    train = [r for r in read_jsonl(tmp_path / "unweighted" / "log.jsonl") if r["type"] == "train"]
    assert all(r["ce_mix"] > 0 for r in train)  # weight 1 whatever the confidence


def test_dacs_resumes_bit_for_bit(tmp_path):
    def build(name, resume=None):
        raw = tiny_config(schedule={"max_iters": 4}, train={"eval_interval": 4},
                          adapt={"method": "dacs", "target": tiny_dataset("synthetic-target", "train", 4),
                                 "dacs": {"rcs_min_pixels": 0}, "teacher": {"momentum": 0.99}})
        cfg = config_from_dict(raw)
        return build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / name, resume=resume, progress=False)

    straight = build("a")
    straight.fit()
    interrupted = build("b")
    original = interrupted.train_step

    def step(batch):
        if interrupted.iteration == 2:
            raise KeyboardInterrupt
        return original(batch)

    interrupted.train_step = step
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = build("b", resume="auto")
    resumed.fit()
    assert resumed.iteration == straight.iteration == 4
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.teacher.state_dict().items():
        assert torch.equal(value, resumed.teacher.state_dict()[name]), name
