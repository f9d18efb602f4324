"""ProAC's robustness cases (contraseg.robustness) and ``contraseg eval --perturb``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from contraseg.cli import main
from contraseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from contraseg.robustness import (
    Perturbation,
    PerturbationError,
    PerturbedDataset,
    apply_perturbation,
    night,
    occlusion_mask,
    parse_perturbation,
)

from helpers import tiny_config, write_yaml

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def mid_grey(h=64, w=96, seed=0):
    """A normalised image whose pixels lie in [0.3, 0.7] (no clipping for small shifts)."""
    pixels = 0.3 + 0.4 * torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    return pixels, (pixels - MEAN) / STD


def pixels_of(image):
    return image * STD + MEAN


def test_parse_and_record():
    p = parse_perturbation("illumination:night:0.5", seed=3)
    assert (p.name, p.mode, p.strength, p.seed) == ("illumination", "night", 0.5, 3)
    assert p.record() == {"name": "illumination", "mode": "night", "strength": 0.5, "patch": None, "seed": 3,
                          "spec": "illumination:night:0.5"}
    assert parse_perturbation("mask:0.25").patch == 16 and parse_perturbation("mask:0.25:8").spec == "mask:0.25:8"
    assert parse_perturbation("resolution:0.5").strength == 0.5
    for bad in ["resolution:0", "resolution:x", "illumination:fog:0.5", "illumination:night:2", "mask:1",
                "mask:0.2:3.5", "blur:1", "illumination:gamma:0", "mask"]:
        with pytest.raises(PerturbationError, match="--perturb"):
            parse_perturbation(bad)


def test_brightness_shifts_the_pixel_mean_and_gamma_follows_its_formula():
    pixels, image = mid_grey()
    out = pixels_of(apply_perturbation(image, Perturbation("illumination", 0.2, mode="brightness"), 0))
    assert torch.allclose(out.mean(), pixels.mean() + 0.2, atol=1e-5)
    darker = pixels_of(apply_perturbation(image, Perturbation("illumination", -0.25, mode="brightness"), 0))
    assert torch.allclose(darker.mean(), pixels.mean() - 0.25, atol=1e-5)
    clipped = pixels_of(apply_perturbation(image, Perturbation("illumination", 1.0, mode="brightness"), 0))
    assert torch.allclose(clipped, torch.ones_like(clipped), atol=1e-5)  # clipped to white
    g = pixels_of(apply_perturbation(image, Perturbation("illumination", 2.2, mode="gamma"), 0))
    for c, y, x in [(0, 0, 0), (1, 10, 20), (2, 63, 95)]:
        assert math.isclose(float(g[c, y, x]), float(pixels[c, y, x]) ** 2.2, abs_tol=1e-5)


def test_night_darkens_by_its_formula_with_noise_of_the_stated_std():
    pixels, image = mid_grey(128, 128)
    s = 0.5
    out = pixels_of(apply_perturbation(image, Perturbation("illumination", s, mode="night"), 7))
    expected = (1 - 0.8 * s) * pixels.pow(1 + s)  # >= 0.6 * 0.3^1.5 = 0.099: 0.025-std noise rarely clips
    residual = out - expected
    assert abs(float(residual.mean())) < 0.002
    assert abs(float(residual.std()) - 0.05 * s) < 0.002
    assert float(out.mean()) < 0.35 * float(pixels.mean()) + 0.05
    zero = night(pixels, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(zero, pixels)


@pytest.mark.parametrize("fraction, patch, size", [(0.25, 16, (64, 96)), (0.5, 8, (60, 90)), (0.1, 16, (33, 47)),
                                                   (0.0, 16, (32, 32))])
def test_masked_fraction_within_half_a_patch(fraction, patch, size):
    h, w = size
    for index in range(5):
        mask = occlusion_mask(h, w, fraction, patch, Perturbation("mask", fraction, patch=patch).generator(index))
        assert abs(float(mask.float().mean()) - fraction) <= patch * patch / (2 * h * w) + 1e-9
    _, image = mid_grey(h, w)
    out = apply_perturbation(image, Perturbation("mask", fraction, patch=patch), 0)
    zero = (out == 0).all(0)
    assert torch.equal(zero, occlusion_mask(h, w, fraction, patch, Perturbation("mask", fraction).generator(0)))
    assert torch.equal(out[:, ~zero], image[:, ~zero])  # the rest untouched


def test_same_seed_same_output_other_seed_or_image_other_output():
    _, image = mid_grey()
    for spec in ["mask:0.3", "illumination:night:0.7"]:
        a = apply_perturbation(image, parse_perturbation(spec, seed=1), 4)
        assert torch.equal(a, apply_perturbation(image, parse_perturbation(spec, seed=1), 4))
        assert not torch.equal(a, apply_perturbation(image, parse_perturbation(spec, seed=2), 4))
        assert not torch.equal(a, apply_perturbation(image, parse_perturbation(spec, seed=1), 5))


class _Tiny(torch.utils.data.Dataset):
    info = "info"

    class transform:  # noqa: N801 - a stand-in with the EvalTransform attributes
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __len__(self):
        return 3

    def __getitem__(self, i):
        pixels = torch.full((3, 20, 30), 0.5)
        return {"image": normalize((pixels * 255).to(torch.uint8), (0.5,) * 3, (0.25,) * 3),
                "label": torch.full((20, 30), i, dtype=torch.int64), "name": f"s{i}"}


def test_dataset_uses_its_own_normalisation_and_leaves_labels_alone():
    base = _Tiny()
    bright = PerturbedDataset(base, parse_perturbation("illumination:brightness:0.25"))
    sample = bright[1]
    assert torch.allclose(sample["image"] * 0.25 + 0.5, torch.full((3, 20, 30), 0.5 + 0.25 - 0.5 / 255), atol=1e-3)
    assert torch.equal(sample["label"], base[1]["label"]) and sample["name"] == "s1" and bright.info == "info"
    small = PerturbedDataset(base, parse_perturbation("resolution:0.5"))[2]
    assert small["image"].shape == (3, 10, 15) and small["label"].shape == (20, 30)
    big = PerturbedDataset(base, parse_perturbation("resolution:1.5"))[0]
    assert big["image"].shape == (3, 30, 45) and big["label"].shape == (20, 30)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    config = write_yaml(root / "tiny.yaml", tiny_config())
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return root / "run" / "last.pth"


def test_eval_perturb_writes_the_perturbation_and_keeps_full_size_labels(checkpoint, capsys):
    args = ["eval", str(checkpoint), "--device", "cpu", "--num-workers", "0"]
    assert main(args) == 0
    (clean_file,) = checkpoint.parent.glob("last.pth.eval.*.json")
    clean = json.loads(clean_file.read_text())
    assert clean["perturbation"] is None
    for spec, tag in [("resolution:0.5", "resolution-0.5"), ("illumination:night:0.5", "illumination-night-0.5"),
                      ("mask:0.25", "mask-0.25-16")]:
        assert main([*args, "--perturb", spec, "--perturb-seed", "3"]) == 0
        assert f"perturbed {parse_perturbation(spec).spec} seed 3" in capsys.readouterr().out
        out = clean_file.with_name(f"{clean_file.stem}.perturb-{tag}-seed3.json")
        result = json.loads(out.read_text())
        assert result["perturbation"] == parse_perturbation(spec, seed=3).record()
        metrics = result["results"]["synthetic-target/val"]
        assert metrics["pixels"] == clean["results"]["synthetic-target/val"]["pixels"] == 2 * 32 * 64
    assert main([*args, "--perturb", "fog:1"]) == 2
    assert "contraseg eval: error: --perturb 'fog:1': expected resolution:S" in capsys.readouterr().err
