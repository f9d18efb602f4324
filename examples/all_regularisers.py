"""Every regulariser of contraseg on the same dense embeddings, one call each."""

import torch
import torch.nn.functional as F

from contraseg.losses import ImageLevelLoss, PixelContrastLoss, PixelView, PPCLoss, PPDLoss, ProACLoss, WDASSContrastLoss
from contraseg.prototypes import NearestPrototypeHead, WDASSPrototypeEstimator, hyperspherical_prototypes
from contraseg.sampling import PixelMemoryBank

torch.manual_seed(0)
K, D = 19, 64
embed = F.normalize(torch.randn(2, D, 33, 65), dim=1).requires_grad_()  # B x D x h x w
logits = torch.randn(2, K, 33, 65)                                      # B x K x h x w
labels = torch.randint(0, K, (2, 1, 9, 17)).float()
labels = F.interpolate(labels, size=(129, 257))[:, 0].long()            # B x H x W (any size)

proac = ProACLoss(hyperspherical_prototypes(K, D))(embed, labels)
contrast = PixelContrastLoss(max_samples=512, max_views=50)(embed, labels, logits.argmax(1))
memory = PixelMemoryBank(K, D, pixel_size=500, segment_size=100)
memory.enqueue(embed.detach(), labels)
with_memory = PixelContrastLoss(max_samples=512, max_views=50, memory=memory)(embed, labels, logits.argmax(1))

head = NearestPrototypeHead(K, num_prototypes=10, dim=D)
out = head(embed)
targets = head.assign(embed, labels, out["logits"]).flatten()           # Sinkhorn within each class
flat = out["prototype_logits"].permute(0, 2, 3, 1).reshape(-1, K * 10)
ppc, ppd = PPCLoss()(flat, targets), PPDLoss()(flat, targets)

presence = torch.zeros(2, K).scatter_(1, labels.flatten(1), 1.0)        # image-level weak labels
image_level = ImageLevelLoss()(logits, presence)
estimator = WDASSPrototypeEstimator(K, D)                               # WDASS's, as released
estimator.update("source", embed, labels)
estimator.update("target", embed, labels)
src_protos, _ = estimator.get("source")                                 # K x D
tgt_protos, _ = estimator.get("target")
confidence, predictions = logits.softmax(1).max(1)
view = PixelView(embed, labels, predictions, confidence)               # what the sampled anchors come from
wdass = WDASSContrastLoss()(view, view, None, src_protos, tgt_protos, torch.Generator().manual_seed(0))

for name, value in [("ProAC", proac), ("pixel contrast", contrast), ("pixel contrast + memory", with_memory),
                    ("ProtoSeg PPC", ppc), ("ProtoSeg PPD", ppd), ("WDASS image-level", image_level),
                    ("WDASS prototype contrast", wdass["total"])]:
    print(f"{name:>26}: {value.item():.4f}")
