"""Small shared test utilities (random dense inputs, dense->flat reference flattening)."""

import torch
import torch.nn.functional as F


def random_batch(b=2, d=8, h=5, w=6, k=4, label_size=None, ignore_frac=0.2, dtype=torch.float64, seed=0):
    """Random embeddings B x D x h x w and labels B x H x W with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, h, w, generator=g, dtype=dtype)
    hh, ww = label_size or (h, w)
    labels = torch.randint(0, k, (b, hh, ww), generator=g)
    labels[torch.rand(b, hh, ww, generator=g) < ignore_frac] = 255
    return emb.requires_grad_(True), labels


def flat_reference(emb, labels, ignore=255):
    """Resize labels with nearest neighbour and return (normalised feats list, labels list)."""
    b, d, h, w = emb.shape
    lab = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    feats, ys = [], []
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                if lab[bi, y, x] != ignore:
                    f = emb[bi, :, y, x]
                    feats.append(f / f.norm())
                    ys.append(int(lab[bi, y, x]))
    return feats, ys
