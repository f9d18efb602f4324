"""Two gloo processes on CPU: the distributed reductions give the single-process answer."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contraseg.distributed import all_gather_cat
from contraseg.prototypes import PrototypeBank
from contraseg.prototypes.sinkhorn_knopp import grouped_sinkhorn


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
        torch.save({"rows": rows, "q": q, "idx": idx, "protos": bank.prototypes, "gathered": gathered},
                   os.path.join(out_dir, f"rank{rank}.pt"))
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
