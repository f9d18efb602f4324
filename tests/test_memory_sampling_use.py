"""The memory bank's example sampling in use: the config keys, PixelContrastLoss, peak
memory flat in the bank's size, and two gloo ranks contrasting with the gathered bank."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.regularisers import build_regulariser
from contraseg.losses import PixelContrastLoss
from contraseg.losses.memory_sampling import sampled_memory_contrast
from contraseg.sampling import PixelMemoryBank

from helpers import random_batch, tiny_config
from test_distributed_core import _free_port
from test_memory_sampling import reference


def test_config_keys_reach_the_loss():
    reg = config_from_dict(tiny_config(regulariser={"name": "pixel_contrast_memory"})).regulariser
    assert (reg.memory_sampling, reg.memory_positives, reg.memory_negatives,
            reg.memory_semi_hard_fraction) == ("all", 1024, 2048, 0.1)
    cfg = config_from_dict(tiny_config(regulariser={
        "name": "pixel_contrast_memory", "memory_sampling": "semi_hard", "memory_positives": 8,
        "memory_negatives": 16, "memory_semi_hard_fraction": 0.2})).regulariser
    loss = build_regulariser(cfg, num_classes=4, embed_dim=8).loss
    assert (loss.memory_sampling, loss.memory_positives, loss.memory_negatives,
            loss.memory_semi_hard_fraction) == ("semi_hard", 8, 16, 0.2)
    with pytest.raises(ConfigError, match="memory_sampling"):
        config_from_dict(tiny_config(regulariser={"name": "pixel_contrast_memory", "memory_sampling": "hard"}))
    with pytest.raises(ConfigError, match="memory_negatives"):
        config_from_dict(tiny_config(regulariser={"name": "pixel_contrast_memory", "memory_negatives": 0}))


def _filled_bank(k=3, d=8, seed=0):
    bank = PixelMemoryBank(k, d, pixel_size=20, segment_size=5, pixels_per_image=6)
    g = torch.Generator().manual_seed(seed)
    for step in range(3):
        emb, labels = random_batch(b=2, d=d, h=6, w=7, k=k, dtype=torch.float32, seed=seed + step)
        bank.enqueue(emb.detach(), labels, generator=g)
    return bank


def test_pixel_contrast_loss_samples_with_a_seed_from_its_generator():
    bank = _filled_bank()
    emb, labels = random_batch(b=2, d=8, h=6, w=7, k=3, dtype=torch.float32, seed=4)
    emb = emb.detach()
    preds = labels % 3
    losses = {}
    for sampling in ("all", "random", "hardest", "semi_hard"):
        fn = PixelContrastLoss(memory=bank, memory_sampling=sampling, memory_positives=4, memory_negatives=8,
                               max_samples=40, max_views=10)
        x = emb.clone().requires_grad_(True)
        losses[sampling] = fn(x, labels, preds, generator=torch.Generator().manual_seed(1))
        losses[sampling].backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = PixelContrastLoss(memory=bank, memory_sampling="random", memory_positives=4, memory_negatives=8,
                              max_samples=40, max_views=10)(emb, labels, preds, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(again, losses["random"].detach(), rtol=1e-6)  # the same draws from the same seed
    assert len({round(float(v.detach()), 6) for v in losses.values()}) == 4
    with pytest.raises(ValueError, match="memory_sampling"):
        PixelContrastLoss(memory=bank, memory_sampling="hardest", memory_impl="dense")


def _peak(size, sampling):
    from contraseg.bench.losses import full_bank
    from contraseg.bench.timing import cpu_peak_bytes

    bank = full_bank(2, 8, size, torch.device("cpu"))
    queues, counts = bank.queues()
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(64, 8, generator=g), dim=1)
    labels = torch.randint(0, 2, (64,), generator=g)

    def run():
        a = x.clone().requires_grad_(True)
        sampled_memory_contrast(a, labels, queues, counts, 0.1, 0.07, sampling, 32, 64, seed=0,
                                block_size=256).backward()

    run()
    return cpu_peak_bytes(run)


@pytest.mark.parametrize("sampling", ["random", "hardest", "semi_hard"])
def test_peak_memory_does_not_grow_with_the_bank(sampling):
    """4x the bank entries (2 x 2 x 256 -> 2 x 2 x 1024), ~1x the peak memory."""
    small, large = _peak(256, sampling), _peak(1024, sampling)
    assert large / small <= 1.1, f"{sampling}: 4x the bank took {large / small:.2f}x the memory"


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(10 + rank)  # every rank its own batch
        bank = PixelMemoryBank(3, 6, pixel_size=30, segment_size=6, pixels_per_image=5).double()
        emb, labels = random_batch(b=2, d=6, h=5, w=6, k=3, dtype=torch.float64, seed=10 + rank)
        bank.enqueue(emb.detach(), labels, generator=g)  # gathers both ranks' entries
        queues, counts = bank.queues()
        x = F.normalize(torch.randn(7, 6, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
        anchor_labels = torch.randint(0, 3, (7,), generator=g)
        loss = sampled_memory_contrast(x, anchor_labels, queues, counts, 0.1, 0.07, "semi_hard", 3, 5,
                                       seed=100 + rank, semi_hard_fraction=0.5, block_size=4)
        loss.backward()
        saved = {"queues": [q.clone() for q in queues], "counts": [c.clone() for c in counts], "x": x.detach(),
                 "labels": anchor_labels, "loss": loss.detach(), "grad": x.grad}
        torch.save(saved, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_sample_from_the_gathered_bank(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(path) for path in sorted(tmp_path.glob("rank*.pt"))]
    for a, b in zip(results[0]["queues"] + results[0]["counts"], results[1]["queues"] + results[1]["counts"]):
        assert torch.equal(a, b)  # one bank on both ranks
    # both ranks' entries: more than one rank's enqueue can hold (5 pixels per image and class)
    assert int(results[0]["counts"][0].sum()) > 2 * 5 * 3  # one rank: 2 images x 5 pixels x 3 classes at most
    for rank, r in enumerate(results):
        x = r["x"].clone().requires_grad_(True)
        want = reference(x, r["labels"], r["queues"], r["counts"], "semi_hard", 3, 5, seed=100 + rank, fraction=0.5)
        want.backward()
        assert torch.allclose(r["loss"], want.detach(), rtol=1e-10)
        assert torch.allclose(r["grad"], x.grad, rtol=1e-8, atol=1e-12)
