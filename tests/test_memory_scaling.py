"""No loss may build an N x N matrix over all pixels.

Peak memory of one forward+backward (replayed from the profiler's allocation events)
must grow linearly with the number of pixels: four times the pixels, about four times
the memory (an N x N matrix would make it sixteen). At 90,000 pixels such a matrix
alone would take 32 GB.
"""

import pytest
import torch

from contraseg.bench.losses import build_case, make_inputs
from contraseg.bench.timing import cpu_peak_bytes

B, D, K = 1, 8, 19
SMALL, LARGE = (150, 150), (300, 300)


def peak(case, size):
    inputs = make_inputs(B, D, *size, K, torch.device("cpu"))
    return cpu_peak_bytes(build_case(case, D, K, torch.device("cpu"), inputs))


@pytest.mark.parametrize(
    "case", ["proac", "proac-pixel-anchor", "pixel-contrast", "protoseg-ppc-ppd", "wdass-prototype-contrast"]
)
def test_peak_memory_is_linear_in_pixels(case):
    small, large = peak(case, SMALL), peak(case, LARGE)
    n = B * LARGE[0] * LARGE[1]
    assert large / small < 6, f"{case}: 4x the pixels took {large / small:.1f}x the memory"
    assert large < n * n * 4 / 50, f"{case}: peak {large / 2**20:.0f} MiB at {n} pixels"



def memory_bank_peak(memory_size, memory_impl):
    """Peak memory of pixel contrast against a full bank of 2 classes x 2 kinds x ``memory_size``."""
    from contraseg.bench.losses import full_bank
    from contraseg.losses import PixelContrastLoss

    classes = 2  # few blocks: the profiler costs ~10 ms per op on the shared machine
    emb, labels, preds = make_inputs(2, D, 24, 24, classes, torch.device("cpu"))
    bank = full_bank(classes, D, memory_size, torch.device("cpu"))
    loss_fn = PixelContrastLoss(memory=bank, memory_impl=memory_impl, max_samples=32, max_views=8, block_size=256)

    def run():
        loss_fn(emb.detach().requires_grad_(True), labels, preds, generator=torch.Generator().manual_seed(0)).backward()

    run()
    return cpu_peak_bytes(run)


def test_streaming_memory_contrast_does_not_grow_with_the_bank():
    """4x the bank entries (2 x 2 x 256 -> 2 x 2 x 1024): the streaming loss's peak memory
    stays within 1.1x (its blocks have a fixed size), the dense reference's grows ~4x."""
    small, large = memory_bank_peak(256, "streaming"), memory_bank_peak(1024, "streaming")
    assert large / small <= 1.1, f"streaming: 4x the bank took {large / small:.2f}x the memory"
    dense_small, dense_large = memory_bank_peak(256, "dense"), memory_bank_peak(1024, "dense")
    assert dense_large / dense_small > 2, "the dense reference should grow with the bank"
