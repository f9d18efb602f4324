# DeepLabV3+ R50-D8 on Cityscapes (mmseg's own config) + ContrastiveSeg's pixel-to-pixel
# contrast between the anchors of the batch (half hard, half easy).
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['contraseg.integrations.mmseg'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        type='EmbedDepthwiseSeparableASPPHead',
        embed_channels=256,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            # the released settings are the loss's defaults: t = 0.1, t_base = 0.07, 1024 anchors, 100 views
            dict(type='PixelContrastLoss', loss_weight=0.1),
        ]))
