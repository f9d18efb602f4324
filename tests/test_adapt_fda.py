"""FDA (contraseg.adapt.fda): the amplitude swap against a numpy FFT reference, the robust
entropy against its formula, multi-band averaging, and a 2-iteration ``adapt.method: fda``
run whose last.pth seeds pseudo-labelling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contraseg.adapt import fda
from contraseg.adapt.config import adapt_section
from contraseg.adapt.fda_config import FDAConfig
from contraseg.adapt.run import build_adapt_trainer
from contraseg.cli import main
from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.run_log import read_jsonl

from helpers import tiny_config, tiny_dataset


def numpy_fda(src, trg, beta):
    """Reference: numpy FFT, amplitude of the four b x b corners from the target (the
    released ``low_freq_mutate`` window), source phase, real part of the inverse."""
    fs, ft = np.fft.fft2(src, axes=(-2, -1)), np.fft.fft2(trg, axes=(-2, -1))
    amp, pha = np.abs(fs), np.angle(fs)
    h, w = src.shape[-2:]
    b = int(np.floor(min(h, w) * beta))
    for rows in (slice(0, b), slice(h - b, h)):
        for cols in (slice(0, b), slice(w - b, w)):
            amp[..., rows, cols] = np.abs(ft)[..., rows, cols]
    return np.real(np.fft.ifft2(amp * np.exp(1j * pha), axes=(-2, -1)))


@pytest.mark.parametrize("beta, size", [(0.01, (200, 300)), (0.09, (40, 60)), (0.1, (33, 47)), (0.5, (16, 16))])
def test_amplitude_swap_matches_numpy(beta, size):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 255, (2, 3, *size))
    trg = rng.uniform(0, 255, (2, 3, *size)) * np.linspace(0.2, 1.0, size[1])  # another low-frequency content
    out = fda.amplitude_swap(torch.from_numpy(src).float(), torch.from_numpy(trg).float(), beta)
    assert out.shape == src.shape and out.dtype == torch.float32
    assert np.allclose(out.numpy(), numpy_fda(src, trg, beta), atol=1e-2)
    b = fda.low_frequency_window(*size, beta)
    assert b == math.floor(min(size) * beta)
    if b > 0:  # the DC term (mean colour) is the target's, the phase the source's
        assert np.allclose(out.numpy().mean((-2, -1)), trg.mean((-2, -1)), rtol=1e-3)


def test_amplitude_swap_edges():
    x = torch.rand(1, 3, 20, 30) * 255
    assert torch.allclose(fda.amplitude_swap(x, torch.rand(1, 3, 20, 30) * 255, 0.04), x)  # b = 0: unchanged
    assert torch.allclose(fda.amplitude_swap(x, x, 0.3), x, atol=1e-3)  # own amplitude: unchanged
    with pytest.raises(ValueError, match="beta must be in"):
        fda.amplitude_swap(x, x, 0.6)
    with pytest.raises(ValueError, match="one shape"):
        fda.amplitude_swap(x, x[..., :10], 0.1)


def test_robust_entropy_formula_and_gradient():
    logits = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    loss = fda.robust_entropy(logits, eta=2.0)
    p = torch.softmax(logits, 1)
    values = []
    for b in range(2):
        for y in range(3):
            for x in range(4):
                q = [float(p[b, k, y, x].detach()) for k in range(5)]
                e = -sum(v * math.log(v) for v in q) / math.log(5)
                values.append((e * e + 1e-8) ** 2.0)
    assert float(loss.detach()) == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert torch.autograd.gradcheck(lambda z: fda.robust_entropy(z, 1.5), (logits,))
    uniform = torch.zeros(1, 19, 2, 2)
    assert float(fda.robust_entropy(uniform, 2.0)) == pytest.approx(1.0, abs=1e-5)  # E = 1 at the uniform


def test_multiband_average_is_the_mean_of_softmaxes():
    class Fixed(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, images):
            return {"logits": self.value.expand(images.shape[0], -1, -1, -1)}

    logits = [torch.randn(1, 4, 2, 3) for _ in fda.MBT_BETAS]
    probs = fda.multiband_probabilities([Fixed(v) for v in logits], torch.zeros(2, 3, 8, 8))
    expected = sum(torch.softmax(v, 1) for v in logits) / 3
    assert torch.allclose(probs, expected.expand(2, -1, -1, -1)) and torch.allclose(probs.sum(1), torch.ones(2, 2, 3))
    ensemble = fda.MultiBandEnsemble([Fixed(v) for v in logits])
    assert torch.allclose(torch.softmax(ensemble(torch.zeros(2, 3, 8, 8))["logits"], 1), probs, atol=1e-6)


def test_config_defaults_are_the_released_values_and_beta_is_checked():
    cfg = FDAConfig()
    assert (cfg.beta, cfg.entropy_weight, cfg.eta, cfg.entropy_start_iter) == (
        fda.RELEASED_BETA, fda.RELEASED_ENTROPY_WEIGHT, fda.RELEASED_ETA, 0)
    raw = tiny_config(adapt={"method": "fda", "target": tiny_dataset("synthetic-target", "train", 4),
                             "fda": {"beta": 0.7}})
    with pytest.raises(ConfigError, match="config key adapt.fda.beta: 0.7 is not allowed"):
        adapt_section(config_from_dict(raw))


def test_fda_trains_two_iterations_and_its_checkpoint_pseudo_labels(tmp_path):
    raw = tiny_config(adapt={"method": "fda", "target": tiny_dataset("synthetic-target", "train", 4),
                             "fda": {"beta": 0.09, "entropy_weight": 0.5, "entropy_start_iter": 1}})
    cfg = config_from_dict(raw)
    trainer = build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / "run", progress=False)
    source, target = next(iter(trainer._loader()))
    assert set(target) == {"image", "name"}
    styled = trainer.styled_source(source["image"], target["image"])
    pixels = lambda x: (x * trainer.pixel_std + trainer.pixel_mean) * 255  # noqa: E731
    expected = numpy_fda(pixels(source["image"]).double().numpy(), pixels(target["image"]).double().numpy(), 0.09)
    assert np.allclose(pixels(styled).numpy(), expected, atol=0.05)
    assert trainer.fit()["iteration"] == 2
    train = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2] and all(r["entropy_target"] > 0 for r in train)
    assert train[0]["loss"] == pytest.approx(train[0]["ce_source"], rel=1e-5)  # entropy off before iteration 1
    assert train[1]["loss"] == pytest.approx(train[1]["ce_source"] + 0.5 * train[1]["entropy_target"], rel=1e-5)
    out = tmp_path / "pseudo"
    assert main(["pseudo-label", str(tmp_path / "run" / "last.pth"), "--dataset", "synthetic-target",
                 "--option", "size=[32,64]", "--option", "length=3", "--out", str(out), "--threshold", "0.0",
                 "--device", "cpu"]) == 0
    assert len(list(out.glob("*.png"))) == 3
    # multi-band transfer: a second beta's run, its predictions averaged with the first's
    raw["adapt"]["fda"]["beta"] = 0.05
    cfg = config_from_dict(raw)
    build_adapt_trainer(cfg, adapt_section(cfg), tmp_path / "run05", progress=False).fit()
    mbt = tmp_path / "pseudo_mbt"
    args = ["pseudo-label", str(tmp_path / "run" / "last.pth"), "--dataset", "synthetic-target", "--option",
            "size=[32,64]", "--option", "length=3", "--threshold", "0.0", "--device", "cpu", "--num-workers", "0"]
    assert main([*args, "--out", str(mbt), "--average", str(tmp_path / "run05" / "last.pth")]) == 0
    from contraseg.data import build_dataset
    from contraseg.data.pseudo_labels import PseudoLabelDir
    from contraseg.engine.restore import restore_model

    models = [restore_model(tmp_path / name / "last.pth", torch.device("cpu")).model for name in ("run", "run05")]
    sample = build_dataset("synthetic-target", split="train", size=[32, 64], length=3)[0]
    probs = fda.multiband_probabilities(models, sample["image"][None])
    probs = torch.nn.functional.interpolate(probs, size=(32, 64), mode="bilinear", align_corners=False)
    stored = torch.from_numpy(PseudoLabelDir(mbt).load(sample["name"]).astype(np.int64))
    assert (stored == probs.argmax(1)[0]).float().mean() > 0.99  # ties aside, the averaged prediction
