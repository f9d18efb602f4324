"""The regulariser table: the walk-through "add a regulariser" of docs/architecture.md as a
test (a loss file and one table entry, then training with it named in the config), the
table's checks, and the defaults it reads from the losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from contraseg._labels import resize_labels
from contraseg.engine.config import ConfigError, RegulariserConfig, config_from_dict
from contraseg.engine.config_schema import default_of
from contraseg.engine.regulariser_terms import LossRegulariser
from contraseg.engine.regularisers import (REGULARISERS, RegulariserOption, RegulariserSpec, register_regulariser,
                                           unregister_regulariser)
from contraseg.engine.run_log import read_jsonl
from contraseg.engine.trainer import Trainer
from contraseg.losses import PixelContrastLoss, ProACLoss

from helpers import tiny_config


# --- the loss file (src/contraseg/losses/centre.py in the walk-through) -------------------
class CentreLoss(nn.Module):
    """Pulls each pixel embedding towards its class centre in the batch.

    With ``f_i`` the L2-normalised embeddings and ``c_k`` the normalised mean of class k's
    embeddings in the batch (no gradient through ``c``)::

        loss = mean over labelled pixels i of max(0, 1 - f_i . c_{y_i} - margin)

    Args:
        margin: cosine distance to the centre that costs nothing.
        ignore_index: label of pixels to leave out.

    Shape: embeddings B x D x h x w, labels B x H x W (resized to h x w), output scalar.
    """

    def __init__(self, margin: float = 0.1, ignore_index: int = 255) -> None:
        super().__init__()
        self.margin = float(margin)
        self.ignore_index = int(ignore_index)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        feats = F.normalize(embeddings, dim=1).permute(0, 2, 3, 1)  # B x h x w x D
        labels = resize_labels(labels, tuple(embeddings.shape[-2:]))  # B x h x w
        keep = labels != self.ignore_index
        if not bool(keep.any()):
            return 0 * embeddings.sum()
        feats, labels = feats[keep], labels[keep].long()  # N x D, N
        sums = feats.new_zeros(int(labels.max()) + 1, feats.shape[1]).index_add_(0, labels, feats.detach())
        centres = F.normalize(sums, dim=1)  # K' x D
        return (1 - (feats * centres[labels]).sum(1) - self.margin).clamp_min(0).mean()


# --- the table entry (in src/contraseg/engine/regularisers.py in the walk-through) --------
CENTRE = RegulariserSpec(
    "centre", CentreLoss, weight=0.1,
    options=(RegulariserOption("centre_margin", float, default_of(CentreLoss, "margin"), minimum=0.0,
                               argument="margin"),),
)


@pytest.fixture
def centre():
    """The table with the ``centre`` row for one test (removed afterwards)."""
    yield register_regulariser(CENTRE)
    unregister_regulariser("centre")


def test_a_registered_regulariser_trains_when_the_config_names_it(tmp_path, centre):
    cfg = config_from_dict(tiny_config(regulariser={"name": "centre", "centre_margin": 0.05}))
    trainer = Trainer(cfg, tmp_path, progress=False)
    regulariser = trainer.regulariser
    assert isinstance(regulariser, LossRegulariser) and isinstance(regulariser.loss, CentreLoss)
    assert (regulariser.weight, regulariser.loss.margin) == (0.1, 0.05)  # the table's weight, the config's margin
    assert trainer.fit()["iteration"] == 2
    train = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2]
    for record in train:
        assert record["centre"] > 0 and record["loss"] == pytest.approx(record["ce"] + record["centre"], rel=1e-5)
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())["regulariser"]
    assert stored["name"] == "centre" and stored["centre_margin"] == 0.05


def test_a_registered_option_is_a_checked_config_key(centre):
    assert config_from_dict(tiny_config(regulariser={"name": "centre"})).regulariser.centre_margin == 0.1
    assert RegulariserConfig(name="centre", centre_margin=0.2).centre_margin == 0.2
    with pytest.raises(ConfigError, match=r"config key regulariser.centre_margin: -1.0 is not allowed; it must be >= 0.0"):
        config_from_dict(tiny_config(regulariser={"name": "centre", "centre_margin": -1.0}))


def test_unregistering_removes_the_name_and_its_keys():
    register_regulariser(CENTRE)
    unregister_regulariser("centre")
    assert "centre_margin" not in {f.name for f in dataclasses.fields(RegulariserConfig)}
    with pytest.raises(ConfigError, match=r"regulariser.name: 'centre' is not allowed; allowed values: none, proac, "):
        config_from_dict(tiny_config(regulariser={"name": "centre"}))


def test_the_table_refuses_a_taken_name_and_clashing_options():
    with pytest.raises(ValueError, match="regulariser 'proac' is already registered"):
        register_regulariser(RegulariserSpec("proac", ProACLoss, 0.1))
    other_default = RegulariserOption("temperature", float, 0.5, 0.0, True)
    with pytest.raises(ValueError, match="option 'temperature' differs from regulariser proac's"):
        register_regulariser(RegulariserSpec("hot", CentreLoss, 0.1, (other_default,)))
    with pytest.raises(ValueError, match="option 'weight' is a key of every regulariser"):
        register_regulariser(RegulariserSpec("heavy", CentreLoss, 0.1, (RegulariserOption("weight", float, 1.0),)))
    assert list(REGULARISERS) == ["none", "proac", "pixel_contrast", "pixel_contrast_memory", "protoseg"]


def test_config_defaults_are_the_losses_released_defaults():
    """ContrastiveSeg's released t = 0.1 and t_base = 0.07 (configs/cityscapes/H_48_D_4.json),
    ProAC's t = 0.1: the config refers to the losses' defaults instead of repeating them."""
    loss, cfg = PixelContrastLoss(), RegulariserConfig()
    assert (loss.temperature, loss.base_temperature) == (0.1, 0.07) == (cfg.temperature, cfg.base_temperature)
    assert ProACLoss(torch.eye(2)).temperature == cfg.temperature == 0.1
    assert {name: spec.weight for name, spec in REGULARISERS.items()} == {
        "none": 0.0, "proac": 0.1, "pixel_contrast": 0.1, "pixel_contrast_memory": 0.1, "protoseg": 1.0}
    assert (cfg.ppc_weight, cfg.ppd_weight, cfg.memory_pixel_size, cfg.max_samples) == (0.01, 0.001, 5000, 1024)
