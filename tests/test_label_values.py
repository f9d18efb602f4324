"""Out-of-range label values: training and ``datasets check`` refuse the same files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from contraseg.cli import main
from contraseg.data import build_dataset

from helpers import tiny_config, write_yaml
from test_data_formats import H, W, write_cityscapes


@pytest.fixture
def tree_with_200(tmp_path):
    root = tmp_path / "cs"
    write_cityscapes(root, "train")
    bad = root / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    label = np.asarray(Image.open(bad)).copy()
    label[3, 4] = 200  # not a Cityscapes label id
    Image.fromarray(label).save(bad)
    return root, bad


def test_training_and_datasets_check_refuse_the_same_value(tree_with_200, tmp_path, capsys):
    root, bad = tree_with_200
    dataset = build_dataset("cityscapes", root=root, split="train")
    index = next(i for i in range(len(dataset)) if dataset.samples[i].label == bad)
    with pytest.raises(ValueError, match=rf"label {bad}: value\(s\) 200 outside the cityscapes id table"):
        dataset.load_ground_truth(index)
    assert dataset.load_ground_truth(1 - index if index < 2 else 0).max() <= 255  # clean files still load

    assert main(["datasets", "check", str(root), "--dataset", "cityscapes", "--split", "train"]) == 2
    captured = capsys.readouterr()
    assert str(bad) in captured.out + captured.err and "200" in captured.out + captured.err

    raw = tiny_config(model={"embed_dim": 8}, data={"crop_size": [H, W], "num_workers": 1})
    raw["data"]["train"] = {"name": "cityscapes", "root": str(root), "split": "train", "options": {}}
    config = write_yaml(tmp_path / "cs.yaml", raw)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--device", "cpu",
                 "--set", "schedule.max_iters=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"contraseg train: error: label {bad}: value(s) 200 outside the cityscapes id table "
                   f"(contraseg datasets check lists every such file)")
