# DeepLabV3+ R50-D8 on Cityscapes (mmseg's own config) + ProAC on a 256-d embedding.
# Train with mmseg as usual:  python tools/train.py configs/mmseg/deeplabv3plus_r50-d8_cityscapes_proac.py
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['contraseg.integrations.mmseg'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        type='EmbedDepthwiseSeparableASPPHead',  # DepthwiseSeparableASPPHead + projection to the embedding
        embed_channels=256,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            # K = num_classes fixed hyperspherical prototypes, t = 0.1, weight 0.1 (ProAC's UDA setting)
            dict(type='ProACLoss', loss_weight=0.1),
        ]))
