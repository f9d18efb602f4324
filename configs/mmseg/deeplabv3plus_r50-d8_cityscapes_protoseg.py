# DeepLabV3+ R50-D8 on Cityscapes (mmseg's own config) with ProtoSeg's nonparametric
# classifier: 10 prototypes per class on a 256-d embedding, Sinkhorn assignment and
# momentum update in every training step, cross-entropy + PPC + PPD.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['contraseg.integrations.mmseg'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        type='EmbedDepthwiseSeparableASPPHead',
        embed_channels=256,
        prototypes=dict(num_prototypes=10, momentum=0.999, sinkhorn_iterations=3, sinkhorn_epsilon=0.05),
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            dict(type='PPCLoss', loss_weight=0.01),
            dict(type='PPDLoss', loss_weight=0.001),
        ]))
