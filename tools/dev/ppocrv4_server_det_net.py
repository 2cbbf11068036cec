"""The PP-OCRv4_server_det network in paddle.nn: PPHGNet_small (det=True) → LKPAN → PFHeadLocal.

Shapes, counts and wiring follow PaddleOCR's configs/det/PP-OCRv4/PP-OCRv4_server_det.yml and the
modules it names (written anew here, not copied); sub-layer names follow PaddleOCR's so that a
training checkpoint's state_dict would load. Built and saved by tools/dev/ppocrv4_server_det.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

STEM_CHANNELS = (64, 64, 128)
HG_LAYERS_PER_BLOCK = 6
# (in, mid, out, blocks, downsample); every downsample is a stride-2 depthwise 3x3 in det mode.
DET_STAGES = (
    (128, 128, 256, 1, False),
    (256, 160, 512, 1, True),
    (512, 192, 768, 2, True),
    (768, 224, 1024, 1, True),
)


class ConvBNAct(nn.Layer):
    """Conv (no bias, 'same' padding) → BatchNorm → optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2D(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_ch)
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class ESEModule(nn.Layer):
    """Effective squeeze-excitation: global average → 1x1 conv (with bias) → sigmoid gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv = nn.Conv2D(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.conv(self.avg_pool(x)))


class HGBlock(nn.Layer):
    """Six 3x3 ConvBNAct in a chain; input and every output concatenated, squeezed by a 1x1, ESE-gated."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, layer_num: int, identity: bool):
        super().__init__()
        self.identity = identity
        self.layers = nn.LayerList([ConvBNAct(in_ch if i == 0 else mid_ch, mid_ch, 3) for i in range(layer_num)])
        self.aggregation_conv = ConvBNAct(in_ch + layer_num * mid_ch, out_ch, 1)
        self.att = ESEModule(out_ch)

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        y = self.att(self.aggregation_conv(paddle.concat(features, axis=1)))
        return y + x if self.identity else y


class HGStage(nn.Layer):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, blocks: int, downsample: bool):
        super().__init__()
        self.downsample = ConvBNAct(in_ch, in_ch, 3, stride=2, groups=in_ch, act=False) if downsample else None
        self.blocks = nn.Sequential(
            *[
                HGBlock(in_ch if i == 0 else out_ch, mid_ch, out_ch, HG_LAYERS_PER_BLOCK, identity=i > 0)
                for i in range(blocks)
            ]
        )

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class PPHGNetSmallDet(nn.Layer):
    """Stem (stride 2) + 3x3/2 max-pool, then four HG stages: features at 1/4, 1/8, 1/16, 1/32."""

    def __init__(self):
        super().__init__()
        channels = (3, *STEM_CHANNELS)
        self.stem = nn.Sequential(
            *[ConvBNAct(channels[i], channels[i + 1], 3, stride=2 if i == 0 else 1) for i in range(len(STEM_CHANNELS))]
        )
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.stages = nn.LayerList([HGStage(*config) for config in DET_STAGES])
        self.out_channels = [config[2] for config in DET_STAGES]
        for layer in self.sublayers():  # PPHGNet's own init: Kaiming-normal convs, unit BatchNorms
            if isinstance(layer, nn.Conv2D):
                nn.initializer.KaimingNormal()(layer.weight)

    def forward(self, x) -> list[paddle.Tensor]:
        x = self.pool(self.stem(x))
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


# --- neck: LKPAN, mode "large", intracl ------------------------------------------------------------


def _conv(in_ch: int, out_ch: int, kernel, stride=1, padding=0, bias: bool = True) -> nn.Conv2D:
    return nn.Conv2D(
        in_ch,
        out_ch,
        kernel,
        stride=stride,
        padding=padding,
        weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingUniform()),
        bias_attr=None if bias else False,
    )


def _upsample(x, scale: int):
    return F.upsample(x, scale_factor=scale, mode="nearest", align_mode=1)


class IntraCLBlock(nn.Layer):
    """Intra-instance collaborative learning: 1x1 reduce, three rounds of k×k + k×1 + 1×k (k = 7, 5, 3)
    summed, 1x1 restore, BN + ReLU, residual."""

    def __init__(self, channels: int, reduce_factor: int):
        super().__init__()
        reduced = channels // reduce_factor
        self.conv1x1_reduce_channel = nn.Conv2D(channels, reduced, 1)
        self.conv1x1_return_channel = nn.Conv2D(reduced, channels, 1)
        for k in (7, 5, 3):
            pad = k // 2
            setattr(self, f"v_layer_{k}x1", nn.Conv2D(reduced, reduced, (k, 1), padding=(pad, 0)))
            setattr(self, f"q_layer_1x{k}", nn.Conv2D(reduced, reduced, (1, k), padding=(0, pad)))
            setattr(self, f"c_layer_{k}x{k}", nn.Conv2D(reduced, reduced, (k, k), padding=(pad, pad)))
        self.bn = nn.BatchNorm2D(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv1x1_reduce_channel(x)
        for k in (7, 5, 3):
            square = getattr(self, f"c_layer_{k}x{k}")
            vertical = getattr(self, f"v_layer_{k}x1")
            horizontal = getattr(self, f"q_layer_1x{k}")
            y = square(y) + vertical(y) + horizontal(y)
        return x + self.relu(self.bn(self.conv1x1_return_channel(y)))


class LKPAN(nn.Layer):
    """Large-kernel PAN: 1x1 laterals, top-down sum, 9x9 convs, bottom-up 3x3/2 path, 9x9 convs,
    IntraCL per level, upsample to 1/4 and concatenate (4 × out/4 channels)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        quarter = out_channels // 4
        self.out_channels = out_channels
        self.ins_conv = nn.LayerList([_conv(c, out_channels, 1, bias=False) for c in in_channels])
        self.inp_conv = nn.LayerList([_conv(out_channels, quarter, 9, padding=4, bias=False) for _ in in_channels])
        self.pan_head_conv = nn.LayerList(
            [_conv(quarter, quarter, 3, stride=2, padding=1, bias=False) for _ in in_channels[1:]]
        )
        self.pan_lat_conv = nn.LayerList([_conv(quarter, quarter, 9, padding=4, bias=False) for _ in in_channels])
        self.incl1 = IntraCLBlock(quarter, reduce_factor=2)
        self.incl2 = IntraCLBlock(quarter, reduce_factor=2)
        self.incl3 = IntraCLBlock(quarter, reduce_factor=2)
        self.incl4 = IntraCLBlock(quarter, reduce_factor=2)

    def forward(self, features):
        c2, c3, c4, c5 = features
        in5 = self.ins_conv[3](c5)
        out4 = self.ins_conv[2](c4) + _upsample(in5, 2)
        out3 = self.ins_conv[1](c3) + _upsample(out4, 2)
        out2 = self.ins_conv[0](c2) + _upsample(out3, 2)

        f5 = self.inp_conv[3](in5)
        f4 = self.inp_conv[2](out4)
        f3 = self.inp_conv[1](out3)
        f2 = self.inp_conv[0](out2)

        pan3 = f3 + self.pan_head_conv[0](f2)
        pan4 = f4 + self.pan_head_conv[1](pan3)
        pan5 = f5 + self.pan_head_conv[2](pan4)

        p2 = self.incl1(self.pan_lat_conv[0](f2))
        p3 = self.incl2(self.pan_lat_conv[1](pan3))
        p4 = self.incl3(self.pan_lat_conv[2](pan4))
        p5 = self.incl4(self.pan_lat_conv[3](pan5))
        return paddle.concat([_upsample(p5, 8), _upsample(p4, 4), _upsample(p3, 2), p2], axis=1)


# --- head: PFHeadLocal, k=50, mode "large" --------------------------------------------------------


class DBBranch(nn.Layer):
    """3x3 conv → BN+ReLU → 2x2/2 transposed conv → BN+ReLU (= f, at 1/2) → 2x2/2 transposed conv → sigmoid."""

    def __init__(self, in_ch: int):
        super().__init__()
        mid = in_ch // 4
        bias_bound = 1.0 / mid**0.5
        bias = paddle.ParamAttr(initializer=nn.initializer.Uniform(-bias_bound, bias_bound))
        kaiming = paddle.ParamAttr(initializer=nn.initializer.KaimingUniform())
        self.conv1 = nn.Conv2D(in_ch, mid, 3, padding=1, bias_attr=False)
        self.conv_bn1 = nn.BatchNorm2D(mid, bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1e-4)))
        self.conv2 = nn.Conv2DTranspose(mid, mid, 2, stride=2, weight_attr=kaiming, bias_attr=bias)
        self.conv_bn2 = nn.BatchNorm2D(mid, bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1e-4)))
        self.conv3 = nn.Conv2DTranspose(mid, 1, 2, stride=2, weight_attr=kaiming, bias_attr=bias)

    def forward(self, x) -> tuple[paddle.Tensor, paddle.Tensor]:
        x = F.relu(self.conv_bn1(self.conv1(x)))
        f = F.relu(self.conv_bn2(self.conv2(x)))
        return F.sigmoid(self.conv3(f)), f


class ConvBNReLU(nn.Layer):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2D(in_ch, out_ch, kernel, padding=padding, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class LocalModule(nn.Layer):
    """Refines the shrink map from [map, upsampled f]: 3x3 ConvBNReLU then a 1x1 conv to one logit."""

    def __init__(self, in_ch: int, mid_ch: int):
        super().__init__()
        self.last_3 = ConvBNReLU(in_ch + 1, mid_ch, 3, padding=1)
        self.last_1 = nn.Conv2D(mid_ch, 1, 1)

    def forward(self, features, init_map):
        return self.last_1(self.last_3(paddle.concat([init_map, features], axis=1)))


class PFHeadLocal(nn.Layer):
    """DB head plus local refinement; inference returns 0.5 * (shrink map + refined map), (N, 1, H, W).

    The threshold branch only feeds DB's training loss. It is built all the same: PIR's jit.save keeps
    every parameter of the layer, so its 13 tensors (~0.66 MB) sit in inference.pdiparams as dead
    parameters, as in the official PIR export (its 109 MB is only reached with them).
    """

    def __init__(self, in_ch: int, k: int = 50):
        super().__init__()
        self.k = k
        self.binarize = DBBranch(in_ch)
        self.thresh = DBBranch(in_ch)
        self.up_conv = nn.Upsample(scale_factor=2, mode="nearest", align_mode=1)
        self.cbn_layer = LocalModule(in_ch // 4, in_ch // 4)  # mode "large": mid = in/4

    def forward(self, x):
        shrink_map, f = self.binarize(x)
        refined = F.sigmoid(self.cbn_layer(self.up_conv(f), shrink_map))
        return 0.5 * (shrink_map + refined)


class PPOCRv4ServerDet(nn.Layer):
    def __init__(self):
        super().__init__()
        self.backbone = PPHGNetSmallDet()
        self.neck = LKPAN(self.backbone.out_channels, 256)
        self.head = PFHeadLocal(self.neck.out_channels, k=50)

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))
