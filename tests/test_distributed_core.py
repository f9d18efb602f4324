"""Two gloo processes on CPU: the distributed reductions give the single-process answer."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contraseg.distributed import all_gather_cat, broadcast_first
from contraseg.prototypes import PrototypeBank
from contraseg.prototypes.sinkhorn_knopp import grouped_sinkhorn
from contraseg.sampling import PixelMemoryBank


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(90, 4, generator=g, dtype=torch.float64) * 2 - 1
    groups = torch.randint(0, 3, (90,), generator=g)
    feats = torch.randn(90, 6, generator=g)
    targets = torch.randint(0, 6, (90,), generator=g)
    correct = torch.rand(90, generator=g) > 0.4
    return scores, groups, feats, targets, correct


def _bank_batch(rank):
    """Rank ``rank``'s batch for the memory bank: B=1 x D=4 x 3 x 3 embeddings and labels."""
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(1, 4, 3, 3, generator=g), torch.randint(0, 3, (1, 3, 3), generator=g)


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        scores, groups, feats, targets, correct = _inputs()
        rows = torch.arange(90)[rank::world]  # uneven split of rows
        rows = rows[: 40 if rank == 0 else None]
        q, idx = grouped_sinkhorn(scores[rows], groups[rows], 3)
        bank = PrototypeBank(3, 2, 6, momentum=0.5)
        bank.update(feats[rows], targets[rows], correct[rows])
        gathered = all_gather_cat(torch.full((rank + 1, 2), float(rank)))
        first = broadcast_first(torch.full((3 - rank, 2), float(rank)))
        banks = {}
        for ranks in ("all", "first"):  # each rank enqueues its own batch
            memory = PixelMemoryBank(3, 4, pixel_size=8, segment_size=4, pixels_per_image=2, enqueue_ranks=ranks)
            memory.enqueue(*_bank_batch(rank), generator=torch.Generator().manual_seed(rank))
            banks[ranks] = memory.state_dict()
        torch.save({"rows": rows, "q": q, "idx": idx, "protos": bank.prototypes, "gathered": gathered,
                    "first": first, "banks": banks}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    scores, groups, feats, targets, correct = _inputs()
    used = torch.cat([r["rows"] for r in results])
    q_all, idx_all = grouped_sinkhorn(scores[used], groups[used], 3)
    assert torch.allclose(torch.cat([r["q"] for r in results]), q_all, atol=1e-10)
    assert torch.equal(torch.cat([r["idx"] for r in results]), idx_all)
    bank = PrototypeBank(3, 2, 6, momentum=0.5)
    bank.update(feats[used], targets[used], correct[used])
    for r in results:
        assert torch.allclose(r["protos"], bank.prototypes, atol=1e-6)
        assert torch.equal(r["gathered"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
        assert torch.equal(r["first"], torch.zeros(3, 2))  # rank 0's three rows on both ranks
    # enqueue_ranks: "all" holds both ranks' entries, "first" only rank 0's, the same on both ranks
    only_first = PixelMemoryBank(3, 4, pixel_size=8, segment_size=4, pixels_per_image=2)
    only_first.enqueue(*_bank_batch(0), generator=torch.Generator().manual_seed(0))
    for r in results:
        for name, value in only_first.state_dict().items():
            assert torch.equal(r["banks"]["first"][name], value), name
        assert torch.equal(r["banks"]["all"]["segment_count"], results[0]["banks"]["all"]["segment_count"])
    assert int(results[0]["banks"]["all"]["segment_count"].sum()) > int(only_first.segment_count.sum())
