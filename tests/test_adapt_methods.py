"""The adaptation-method table: the walk-through "add an adaptation method" of
docs/architecture.md as a test (a trainer file and one table entry, then training with
it named in the config), and the table's checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from contraseg.adapt.config import adapt_section
from contraseg.adapt.losses import masked_cross_entropy
from contraseg.adapt.methods import method_names, register_method, trainer_class, unregister_method
from contraseg.adapt.run import build_adapt_trainer
from contraseg.adapt.trainer import AdaptTrainer
from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.run_log import read_jsonl

from helpers import tiny_config, tiny_dataset


# --- the trainer file (src/contraseg/adapt/entropy_min.py in the walk-through) -----------
class EntropyMinTrainer(AdaptTrainer):
    """Source CE + the mean per-pixel entropy of the model's target predictions (entropy
    minimisation on unlabeled target images)::

        loss = CE(source) + 0.1 * mean_pixels( -sum_k p_k log p_k )   (p: target softmax)
    """

    method = "entropy_min"
    target_kind = "none"  # the target stream gives images only

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        source, target = batch
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        out = self.forward_float(torch.cat([images_s, self.to_device(target, "image")]))
        n = images_s.shape[0]
        ce = masked_cross_entropy(out["logits"][:n], labels_s, self.ignore_index)
        log_p = out["logits"][n:].log_softmax(1)  # B x K x h x w
        entropy = -(log_p.exp() * log_p).sum(1).mean()
        loss = ce + 0.1 * entropy
        self.optimise(loss)
        return {"loss": loss.detach(), "ce_source": ce.detach(), "entropy": entropy.detach()}


@pytest.fixture
def entropy_min():
    """The method table with ``entropy_min`` for one test (the walk-through's one entry)."""
    yield register_method(EntropyMinTrainer)
    unregister_method("entropy_min")


def adapt_config(method: str):
    raw = tiny_config(adapt={"method": method, "target": tiny_dataset("synthetic-target", "train", 4)})
    cfg = config_from_dict(raw)
    return cfg, adapt_section(cfg)


def test_a_registered_method_trains_when_the_config_names_it(tmp_path, entropy_min):
    cfg, adapt = adapt_config("entropy_min")
    trainer = build_adapt_trainer(cfg, adapt, tmp_path, progress=False)
    assert type(trainer) is EntropyMinTrainer and trainer_class("entropy_min") is EntropyMinTrainer
    assert trainer.fit()["iteration"] == 2
    train = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2]
    for record in train:
        assert record["entropy"] > 0 and record["loss"] == pytest.approx(
            record["ce_source"] + 0.1 * record["entropy"], rel=1e-5)


def test_the_method_table_checks_names():
    assert method_names() == ["self_training", "wdass", "source_only", "fda", "dacs"]
    with pytest.raises(ConfigError, match=r"config key adapt.method: 'entropy_min' is not allowed; "
                                          r"allowed values: self_training, wdass, source_only, fda, dacs"):
        adapt_config("entropy_min")
    with pytest.raises(ValueError, match="adaptation method 'wdass' is already registered"):
        register_method(type("AnotherWDASS", (AdaptTrainer,), {"method": "wdass"}))
    with pytest.raises(ValueError, match="unknown adaptation method 'x'; known methods: self_training, "):
        trainer_class("x")
