"""FaceNet's InceptionResnetV1 in PyTorch.

The network is written here so that its ``state_dict`` has exactly the parameter and buffer
names and shapes of the facenet-pytorch release ``20180402-114759-vggface2.pt`` (David
Sandberg's TensorFlow FaceNet trained on VGGFace2, ported to PyTorch): ``conv2d_1a`` ...
``conv2d_4b``, ``repeat_1`` (5 x Block35, residual scale 0.17), ``mixed_6a``, ``repeat_2``
(10 x Block17, scale 0.10), ``mixed_7a``, ``repeat_3`` (5 x Block8, scale 0.20), ``block8``
(scale 1.0, no ReLU), ``last_linear`` (1792 -> 512, no bias), ``last_bn`` (BatchNorm1d 512) and
``logits`` (512 -> 8631, the VGGFace2 training classes; not used for embeddings). Every
BatchNorm uses eps = 0.001, TensorFlow's value.

Embedding forward pass::

    input  float32 (N, 3, 160, 160), RGB, normalised as (x - 127.5) / 128 for x in [0, 255]
    -> convolutional trunk -> (N, 1792, 3, 3) -> global average pool -> dropout (eval: none)
    -> last_linear (N, 512) -> last_bn -> L2 normalise over dim 1
    output float32 (N, 512), every row of unit length
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelFormatError

EMBEDDING_DIM = 512
FEATURE_DIM = 1792
VGGFACE2_CLASSES = 8631
CASIA_WEBFACE_CLASSES = 10575  # the 20180408-102900 training classes
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the published weights were trained with


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU. Parameters: ``conv.*``, ``bn.*``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    """Inception-ResNet-A on a (N, 256, 17, 17) map (at 160 px input); same shape out.

    Three branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3, 32 channels each) are concatenated
    (96), projected back to 256 by a 1x1 conv with bias, scaled and added to the input.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1), BasicConv2d(32, 32, 3, padding=1)
        )
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Inception-ResNet-B on a (N, 896, 8, 8) map; same shape out.

    Branches: 1x1 (128); 1x1 -> 1x7 -> 7x1 (128). Concatenated (256), 1x1 conv to 896, scaled, added.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, 1),
            BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
            BasicConv2d(128, 128, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Inception-ResNet-C on a (N, 1792, 3, 3) map; same shape out.

    Branches: 1x1 (192); 1x1 -> 1x3 -> 3x1 (192). Concatenated (384), 1x1 conv to 1792, scaled,
    added; the ReLU is skipped for the last block of the network (``relu=False``).
    """

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.apply_relu = relu
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, 1),
            BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
            BasicConv2d(192, 192, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1)
        self.relu = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat((self.branch0(x), self.branch1(x)), dim=1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed6a(nn.Module):
    """Reduction-A: (N, 256, 17, 17) -> (N, 896, 8, 8) (384 + 256 conv channels + 256 pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1), BasicConv2d(192, 256, 3, stride=2)
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: (N, 896, 8, 8) -> (N, 1792, 3, 3) (384 + 256 + 256 conv channels + 896 pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1), BasicConv2d(256, 256, 3, stride=2)
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), dim=1)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of (N, D) ``x`` scaled to unit L2 norm (as ``F.normalize(x, dim=1)``).

    Written with a broadcast division rather than ``F.normalize`` (whose ``expand_as`` makes
    the ONNX exporter lose the static output width D).
    """
    return x / torch.linalg.vector_norm(x, ord=2, dim=1, keepdim=True).clamp_min(eps)


class InceptionResnetV1(nn.Module):
    """FaceNet's InceptionResnetV1, state-dict compatible with facenet-pytorch's checkpoints.

    ``forward(x)``: ``x`` float32 (N, 3, S, S) RGB normalised as (x - 127.5) / 128 (S = 160 for
    the published weights; any S >= 75 runs) -> float32 (N, 512) L2-normalised embeddings.
    ``logits`` (512 -> ``num_classes``) exists only so that training checkpoints load strictly;
    ``num_classes=0`` builds the network without it.
    """

    def __init__(self, num_classes: int = VGGFACE2_CLASSES, dropout_prob: float = 0.6) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no logits layer), got {num_classes}")
        self.num_classes = num_classes
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*(Block35(scale=0.17) for _ in range(5)))
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*(Block17(scale=0.10) for _ in range(10)))
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*(Block8(scale=0.20) for _ in range(5)))
        self.block8 = Block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(FEATURE_DIM, EMBEDDING_DIM, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        self.logits: nn.Module | None = nn.Linear(EMBEDDING_DIM, num_classes) if num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised RGB -> (N, 1792, s, s) feature map (s = 3 at S = 160)."""
        x = self.conv2d_1a(x)
        x = self.conv2d_2a(x)
        x = self.conv2d_2b(x)
        x = self.maxpool_3a(x)
        x = self.conv2d_3b(x)
        x = self.conv2d_4a(x)
        x = self.conv2d_4b(x)
        x = self.repeat_1(x)
        x = self.mixed_6a(x)
        x = self.repeat_2(x)
        x = self.mixed_7a(x)
        x = self.repeat_3(x)
        return self.block8(x)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, 512) pre-normalisation embedding (the input of ``logits``)."""
        x = self.avgpool_1a(self.features(x))
        x = self.dropout(torch.flatten(x, 1))
        return self.last_bn(self.last_linear(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 normalised RGB -> (N, 512) float32 L2-normalised embeddings."""
        return l2_normalize(self.bottleneck(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, num_classes) training-class logits (needs the ``logits`` layer)."""
        if self.logits is None:
            raise ModelFormatError(
                "this InceptionResnetV1 was built with num_classes=0: it has no logits layer"
            )
        return self.logits(self.bottleneck(x))


def build_model(num_classes: int = VGGFACE2_CLASSES) -> InceptionResnetV1:
    """A fresh InceptionResnetV1 (PyTorch's default random init) in eval mode, on the CPU.

    ``num_classes`` sizes the ``logits`` layer (8631 for the VGGFace2 checkpoint, 0 for none).
    """
    return InceptionResnetV1(num_classes=num_classes).eval()


def randomize_(
    model: InceptionResnetV1, seed: int = 0, size: int = 160, calibration_batch: int = 8
) -> InceptionResnetV1:
    """Give ``model`` seeded random weights *and* non-trivial BatchNorm statistics, in place.

    Conv / linear weights get PyTorch's default initialisation drawn from ``seed``; every
    BatchNorm gets weight ~ U(0.5, 1.5) and bias ~ N(0, 0.1); then the running mean / variance
    of every BatchNorm are measured by one training-mode pass over ``calibration_batch`` seeded
    random (size x size) images. Without that calibration a random InceptionResnetV1 maps every
    input to nearly the same embedding (cosine ~ 0.9999999), and comparing two runtimes on its
    output would prove little; with it, embeddings of different inputs differ (cosine ~ 0.85
    between noise images) and the BatchNorm statistics are far from the (0, 1) defaults.
    Does not touch the global RNG state. Returns ``model`` in eval mode.
    """
    if calibration_batch < 2:
        raise ValueError(
            f"calibration_batch must be >= 2 (BatchNorm statistics need 2+ samples), got {calibration_batch}"
        )
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.reset_parameters()
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
            bn.reset_running_stats()
        momenta = [bn.momentum for bn in norms]
        try:
            model.eval()  # dropout stays off: only the BatchNorms measure statistics
            for bn in norms:
                bn.momentum = None  # cumulative average: after one pass, the batch's own statistics
                bn.train()
            model(torch.rand(calibration_batch, 3, size, size, generator=gen) * 2 - 1)
        finally:
            for bn, momentum in zip(norms, momenta, strict=True):
                bn.momentum = momentum
                if bn.num_batches_tracked is not None:
                    bn.num_batches_tracked.zero_()
            model.eval()
    return model

