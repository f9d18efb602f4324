"""contraseg.integrations.mmseg: the losses and embedding heads inside mmsegmentation.

Runs where mmsegmentation is installed (the ``test`` extra installs it with mmcv-lite);
skipped otherwise. Under mmcv-lite, ``tests/mmseg_shim.py`` stands in for the compiled
``mmcv.ops`` so that mmseg imports; none of the models below uses a compiled op.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmseg", reason="mmsegmentation not installed: pip install -e '.[mmseg-lite]'")

from mmseg_shim import stub_mmcv_ops_if_uncompiled  # noqa: E402

stub_mmcv_ops_if_uncompiled()

from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import contraseg.integrations.mmseg as cs_mmseg  # noqa: E402
from contraseg.losses import PixelContrastLoss, PPCLoss, PPDLoss, ProACLoss  # noqa: E402
from contraseg.prototypes import hyperspherical_prototypes  # noqa: E402

init_default_scope("mmseg")

# mmseg / mmengine's own deprecation chatter, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:``build_loss`` would be deprecated"),
    pytest.mark.filterwarnings("ignore:Default ``avg_non_ignore`` is False"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
    pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"),
]

K, D, SIZE = 5, 8, 64
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "mmseg"
BN = dict(type="BN", requires_grad=True)

# The four regularisers as loss_decode entries (plus the head options they need).
REGULARISERS = {
    "proac": dict(losses=[dict(type="ProACLoss")]),
    "pixel_contrast": dict(losses=[dict(type="PixelContrastLoss", max_views=4)]),
    "pixel_contrast_memory": dict(
        losses=[dict(type="PixelContrastLoss", max_views=4, memory=dict(pixel_size=30, segment_size=8))]
    ),
    "protoseg": dict(losses=[dict(type="PPCLoss"), dict(type="PPDLoss")], prototypes=dict(num_prototypes=3)),
}
LOSS_KEYS = {
    "proac": ["loss_proac"],
    "pixel_contrast": ["loss_pixel_contrast"],
    "pixel_contrast_memory": ["loss_pixel_contrast"],
    "protoseg": ["loss_ppc", "loss_ppd"],
}


def head_config(regulariser: str, head: str = "EmbedFCNHead", **options) -> dict:
    """The decode head of the tiny model with one regulariser (``options`` override keys)."""
    spec = REGULARISERS[regulariser]
    decode_head = dict(
        type=head, in_channels=64, in_index=3, channels=16, num_classes=K, dropout_ratio=0.0, norm_cfg=BN,
        align_corners=False, embed_channels=D,
        loss_decode=[dict(type="CrossEntropyLoss", loss_weight=1.0), *spec["losses"]],
    )
    if "prototypes" in spec:
        decode_head["prototypes"] = spec["prototypes"]
    if head == "EmbedDepthwiseSeparableASPPHead":
        decode_head.update(dilations=(1, 2), c1_in_channels=8, c1_channels=4)
    if head == "EmbedASPPHead":
        decode_head.update(dilations=(1, 2))
    decode_head.update(options)
    return decode_head


def tiny_model(regulariser: str, head: str = "EmbedFCNHead", **options) -> torch.nn.Module:
    """A ResNet-18 (8 base channels) + embedding head mmseg EncoderDecoder, on CPU."""
    return MODELS.build(model_config(head_config(regulariser, head, **options)))


def model_config(decode_head: dict) -> dict:
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[0.0] * 3, std=[255.0] * 3, pad_val=0,
                               seg_pad_val=255, size=(SIZE, SIZE)),
        backbone=dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, num_stages=4,
                      out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=BN,
                      contract_dilation=True),
        decode_head=decode_head,
        train_cfg=ConfigDict(),
        test_cfg=ConfigDict(mode="whole"),
    )


def scene(seed: int) -> dict:
    """One 64 x 64 image whose colour says its class, in 16 x 16 blocks; a strip ignored."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, K, (4, 4), generator=g)
    labels = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)
    image = labels[None].float() * 50 + torch.rand(3, SIZE, SIZE, generator=g) * 30
    labels[:, :3] = 255
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=labels[None].long())
    sample.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
    return dict(inputs=image.to(torch.uint8), data_samples=sample)


def batch(seeds=(0, 1)) -> tuple[torch.Tensor, list, torch.Tensor]:
    """Pre-processed inputs B x 3 x 64 x 64, data samples, labels B x 64 x 64."""
    scenes = [scene(s) for s in seeds]
    inputs = torch.stack([s["inputs"].float() / 255 for s in scenes])
    samples = [s["data_samples"] for s in scenes]
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    return inputs, samples, labels


def record_outputs(head) -> list[dict]:
    """Keep every ``forward_with_embedding`` output of ``head``."""
    seen: list[dict] = []
    original = head.forward_with_embedding

    def recording(inputs):
        out = original(inputs)
        seen.append(out)
        return out

    head.forward_with_embedding = recording
    return seen


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7)


# --- the loss values are contraseg's own on the same embeddings -------------------------


def test_proac_equals_contraseg():
    model = tiny_model("proac").train()
    seen = record_outputs(model.decode_head)
    inputs, samples, labels = batch()
    losses = model.loss(inputs, samples)
    embed = seen[0]["embed"]
    assert embed.shape == (2, D, SIZE // 8, SIZE // 8)
    reference = ProACLoss(hyperspherical_prototypes(K, D), temperature=0.1, ignore_index=255)
    expected = 0.1 * reference(embed, labels)
    close(losses["decode.loss_proac"], expected)
    grad, = torch.autograd.grad(losses["decode.loss_proac"], embed, retain_graph=True)
    expected_grad, = torch.autograd.grad(expected, embed)
    close(grad, expected_grad)
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg", "decode.loss_proac"}


@pytest.mark.parametrize("memory", [False, True], ids=["batch", "memory"])
def test_pixel_contrast_equals_contraseg(memory):
    model = tiny_model("pixel_contrast_memory" if memory else "pixel_contrast").train()
    wrapper = model.decode_head.embedding_losses[0]
    seen = record_outputs(model.decode_head)
    inputs, samples, labels = batch()
    if memory:
        model.loss(*batch((5, 6))[:2])  # fill the bank with another batch first
        assert len(wrapper.memory) > 0
    bank = copy.deepcopy(wrapper.memory)
    torch.manual_seed(7)  # the anchor sampler and the enqueue draw from the global generator
    losses = model.loss(inputs, samples)
    out = seen[-1]
    reference = PixelContrastLoss(temperature=0.1, base_temperature=0.07, max_samples=1024, max_views=4,
                                  memory=bank)
    torch.manual_seed(7)
    expected = 0.1 * reference(out["embed"], labels, out["logits"].argmax(1), enqueue=memory)
    assert float(expected.detach()) > 0  # anchors were sampled and contrasted
    close(losses["decode.loss_pixel_contrast"], expected)
    grad, = torch.autograd.grad(losses["decode.loss_pixel_contrast"], out["embed"], retain_graph=True)
    expected_grad, = torch.autograd.grad(expected, out["embed"])
    close(grad, expected_grad)
    if memory:  # the batch was enqueued after the loss, exactly as contraseg does
        for (name, got), (_, want) in zip(wrapper.memory.named_buffers(), bank.named_buffers()):
            torch.testing.assert_close(got, want, msg=f"memory bank buffer {name}")


def test_protoseg_equals_contraseg():
    model = tiny_model("protoseg").train()
    head = model.decode_head
    seen = record_outputs(head)
    inputs, samples, labels = batch()
    prototypes = copy.deepcopy(head.prototype_head)
    initial = prototypes.bank.prototypes.clone()
    losses = model.loss(inputs, samples)
    out = seen[0]
    expected = prototypes(out["embed"])
    close(out["logits"], expected["logits"])
    close(out["prototype_logits"], expected["prototype_logits"])
    targets = prototypes.assign(out["embed"], labels, expected["logits"],
                                prototype_logits=expected["prototype_logits"])
    close(losses["decode.loss_ppc"], 0.01 * PPCLoss()(expected["prototype_logits"], targets))
    close(losses["decode.loss_ppd"], 0.001 * PPDLoss()(expected["prototype_logits"], targets))
    # the momentum update moved the head's prototypes exactly as contraseg's
    close(head.prototype_head.bank.prototypes, prototypes.bank.prototypes)
    assert not torch.equal(head.prototype_head.bank.prototypes, initial)
    # mmseg's cross-entropy sees the prototype classifier's logits
    upsampled = F.interpolate(out["logits"], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    ce = F.cross_entropy(upsampled, labels, ignore_index=255, reduction="sum") / labels.numel()
    close(losses["decode.loss_ce"], ce)


def test_prototypes_move_only_in_training():
    model = tiny_model("protoseg").eval()
    before = model.decode_head.prototype_head.bank.prototypes.clone()
    inputs, samples, _ = batch()
    model.loss(inputs, samples)
    assert torch.equal(model.decode_head.prototype_head.bank.prototypes, before)
    model.train().loss(inputs, samples)
    assert not torch.equal(model.decode_head.prototype_head.bank.prototypes, before)


# --- mmseg's own training loop -----------------------------------------------------------


class _ParameterSnapshot(Hook):
    """Copies the decode head's state after the Runner's weight init and after training."""

    def before_train(self, runner):
        self.before = copy.deepcopy(runner.model.decode_head.state_dict())

    def after_train(self, runner):
        self.after = copy.deepcopy(runner.model.decode_head.state_dict())


@pytest.mark.parametrize("regulariser", list(REGULARISERS))
def test_trains_in_mmengine_runner(regulariser, tmp_path):
    config = model_config(head_config(regulariser))
    snapshot = _ParameterSnapshot()
    loader = torch.utils.data.DataLoader([scene(i) for i in range(8)], batch_size=2, collate_fn=pseudo_collate)
    runner = Runner(
        model=config, work_dir=str(tmp_path), experiment_name=f"mmseg_{regulariser}_{tmp_path.name}",
        train_dataloader=loader, train_cfg=dict(type="IterBasedTrainLoop", max_iters=4, val_interval=1000),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)),
        default_scope="mmseg", default_hooks=dict(logger=dict(type="LoggerHook", interval=1), checkpoint=None),
        custom_hooks=[snapshot], log_level="WARNING", randomness=dict(seed=0),
    )
    runner.train()
    history = {key: runner.message_hub.get_scalar(f"train/decode.{key}").data[0]
               for key in ["loss_ce", *LOSS_KEYS[regulariser]]}
    for key, values in history.items():
        assert len(values) == 4 and all(math.isfinite(v) for v in values), (key, values)
    first = 1 if regulariser == "pixel_contrast_memory" else 0  # the memory is empty at step 1
    for key in LOSS_KEYS[regulariser]:
        assert all(v > 0 for v in history[key][first:]), (key, history[key])
    head = runner.model.decode_head
    changed = {k for k in snapshot.before if not torch.equal(snapshot.before[k], snapshot.after[k])}
    # the embedding losses' gradient reached the projection (nothing else feeds it without prototypes)
    assert any(k.startswith("projection.") for k in changed), sorted(changed)
    if regulariser == "pixel_contrast_memory":
        assert len(head.embedding_losses[0].memory) > 0
    if regulariser == "protoseg":
        assert "prototype_head.bank.prototypes" in changed


def test_runner_resume_restores_memory_and_prototypes(tmp_path, monkeypatch):
    """mmengine saves and resumes the losses' state (ProAC prototypes, memory bank).

    mmengine 0.10.7 loads its own checkpoints with torch.load's default, which refuses
    them from torch 2.6 on (open-mmlab/mmengine#1655); the environment variable below is
    torch's switch back to the old default, for checkpoints one trusts.
    """
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    losses = [dict(type="CrossEntropyLoss"), dict(type="ProACLoss", prototype_seed=4),
              dict(type="PixelContrastLoss", max_views=4, memory=dict(pixel_size=30, segment_size=8))]

    def runner(iters: int, resume: bool) -> Runner:
        loader = torch.utils.data.DataLoader([scene(i) for i in range(8)], batch_size=2, collate_fn=pseudo_collate)
        return Runner(
            model=model_config(head_config("proac", loss_decode=losses)), work_dir=str(tmp_path),
            experiment_name=f"resume_{iters}_{tmp_path.name}", train_dataloader=loader,
            train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=1000),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)), default_scope="mmseg",
            default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False)),
            log_level="WARNING", resume=resume,
        )

    first = runner(2, resume=False)
    first.train()
    saved = first.model.decode_head.embedding_losses
    second = runner(2, resume=True)  # resumes from iter_2.pth in work_dir; nothing left to train
    second.train()
    assert second.iter == 2
    resumed = second.model.decode_head.embedding_losses
    torch.testing.assert_close(resumed[0].loss.prototypes, saved[0].loss.prototypes)
    for (name, got), (_, want) in zip(resumed[1].memory.named_buffers(), saved[1].memory.named_buffers()):
        torch.testing.assert_close(got, want, msg=f"memory bank buffer {name}")
    assert len(resumed[1].memory) > 0


# --- configs/mmseg -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.stem)
def test_config_examples_resolve_and_their_head_trains(path):
    """Each example resolves on top of mmseg's own config (``mmseg::``) and runs its
    ``custom_imports``; its decode head, shrunk to the tiny backbone's channels with
    everything else as configured, computes its losses."""
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports["imports"] == ["contraseg.integrations.mmseg"]
    head = cfg.model.decode_head
    assert head.type == "EmbedDepthwiseSeparableASPPHead" and head.embed_channels == 256
    assert cfg.model.backbone.depth == 50 and cfg.train_cfg.max_iters == 80000  # mmseg's base config
    embedding = [loss for loss in head.loss_decode if loss.type != "CrossEntropyLoss"]
    assert embedding
    small = dict(head, in_channels=64, channels=16, c1_in_channels=8, c1_channels=4, dilations=(1, 2),
                 num_classes=K, norm_cfg=BN, embed_channels=D)
    model = MODELS.build(model_config(small)).train()
    assert [type(loss).__name__ for loss in model.decode_head.embedding_losses] == [c.type for c in embedding]
    losses = model.loss(*batch()[:2])
    for loss in model.decode_head.embedding_losses:
        assert torch.isfinite(losses[f"decode.{loss.loss_name}"])


# --- other heads, checkpoints, errors ----------------------------------------------------


@pytest.mark.parametrize("head", ["EmbedASPPHead", "EmbedDepthwiseSeparableASPPHead"])
@pytest.mark.parametrize("regulariser", ["proac", "protoseg"])
def test_other_heads_train_and_predict(head, regulariser):
    model = tiny_model(regulariser, head=head).train()
    inputs, samples, _ = batch()
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    assert model.decode_head.projection.proj[-1].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        predicted = model.predict(inputs, samples)
    assert predicted[0].seg_logits.data.shape == (K, SIZE, SIZE)


def test_state_dict_holds_the_losses_state_and_reloads():
    model = tiny_model("pixel_contrast_memory", loss_decode=[
        dict(type="CrossEntropyLoss"), dict(type="ProACLoss"),
        dict(type="PixelContrastLoss", max_views=4, memory=dict(pixel_size=30, segment_size=8)),
    ]).train()
    model.loss(*batch()[:2])
    state = model.state_dict()
    assert "decode_head.embedding_losses.0.loss.prototypes" in state
    assert "decode_head.embedding_losses.1.loss.memory.pixel_queue" in state
    fresh = tiny_model("pixel_contrast_memory", loss_decode=[
        dict(type="CrossEntropyLoss"), dict(type="ProACLoss"),
        dict(type="PixelContrastLoss", max_views=4, memory=dict(pixel_size=30, segment_size=8)),
    ])
    fresh.load_state_dict(state, strict=True)
    assert len(fresh.decode_head.embedding_losses[1].memory) == len(model.decode_head.embedding_losses[1].memory) > 0


def test_bad_configs_name_the_key():
    with pytest.raises(ValueError, match="needs the head's nearest-prototype classifier"):
        tiny_model("proac", loss_decode=[dict(type="CrossEntropyLoss"), dict(type="PPCLoss")])
    with pytest.raises(ValueError, match="unknown prototypes key 'num_protos'"):
        tiny_model("protoseg", prototypes=dict(num_protos=3))
    with pytest.raises(ValueError, match="unknown memory key 'size'"):
        tiny_model("proac", loss_decode=[dict(type="PixelContrastLoss", memory=dict(size=3))])
    with pytest.raises(ValueError, match="decode_head.projection: unknown kind 'mlp'"):
        tiny_model("proac", projection="mlp")
    with pytest.raises(ValueError, match="embed_channels must be a positive int"):
        tiny_model("proac", embed_channels=0)
    with pytest.raises(ValueError, match="loss_name must start with 'loss_'"):
        tiny_model("proac", loss_decode=[dict(type="ProACLoss", loss_name="proac")])


def test_prototype_file_must_match_the_head(tmp_path):
    from contraseg.prototypes import save_prototypes

    path = tmp_path / "protos.pt"
    save_prototypes(path, hyperspherical_prototypes(K, D + 1))
    with pytest.raises(ValueError, match=r"prototypes are \(5, 9\), the head needs .* 5 x 8"):
        tiny_model("proac", loss_decode=[dict(type="ProACLoss", prototypes=str(path))])
    save_prototypes(path, hyperspherical_prototypes(K, D, seed=3))
    model = tiny_model("proac", loss_decode=[dict(type="ProACLoss", prototypes=str(path))])
    close(model.decode_head.embedding_losses[0].loss.prototypes, hyperspherical_prototypes(K, D, seed=3))


def test_embedding_loss_outside_an_embedding_head_says_where_it_belongs():
    loss = MODELS.build(dict(type="ProACLoss"))
    with pytest.raises(RuntimeError, match="list it in that head's loss_decode"):
        loss({"embed": torch.randn(1, D, 4, 4)}, torch.zeros(1, 4, 4, dtype=torch.long))


def test_public_names():
    assert {"ProACLoss", "PixelContrastLoss", "PPCLoss", "PPDLoss", "EmbedFCNHead"} <= set(cs_mmseg.__all__)
    for name in ("ProACLoss", "PixelContrastLoss", "PPCLoss", "PPDLoss", "EmbedFCNHead", "EmbedASPPHead",
                 "EmbedDepthwiseSeparableASPPHead", "EmbedPSPHead", "EmbedUPerHead", "EmbedSegformerHead"):
        assert MODELS.get(name) is getattr(cs_mmseg, name)
