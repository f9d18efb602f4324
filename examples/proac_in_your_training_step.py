"""Add ProAC to an existing segmentation model's training step (torchvision's FCN here)."""

import torch
import torch.nn.functional as F
from torchvision.models.segmentation import fcn_resnet50

from contraseg.losses import ProACLoss
from contraseg.prototypes import hyperspherical_prototypes

torch.manual_seed(0)
model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=19)
project = torch.nn.Conv2d(2048, 128, 1)  # projection head: backbone features -> embedding
proac = ProACLoss(hyperspherical_prototypes(19, 128), temperature=0.1)
optimiser = torch.optim.SGD([*model.parameters(), *project.parameters()], lr=0.01, momentum=0.9)

images = torch.randn(2, 3, 128, 256)
labels = F.interpolate(torch.randint(0, 19, (2, 1, 4, 8)).float(), size=(128, 256))[:, 0].long()  # blobs
for step in range(5):
    features = model.backbone(images)["out"]                        # B x 2048 x 16 x 32
    logits = F.interpolate(model.classifier(features), size=labels.shape[-2:], mode="bilinear")
    ce = F.cross_entropy(logits, labels, ignore_index=255)
    reg = proac(project(features), labels)                          # labels resized inside
    loss = ce + 0.1 * reg
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    print(f"step {step}: cross-entropy {ce.item():.3f}  ProAC {reg.item():.3f}")
