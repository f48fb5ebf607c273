"""The pre-activation residual network shared by PreAct ResNet-18 and WideResNet.

Both are the same shape (He et al. 2016, "Identity mappings in deep residual networks"): a 3×3
stem conv, stages of BN-ReLU-conv blocks with identity (or 1×1 projection) shortcuts, a final
BN-ReLU, global average pooling and a linear layer. Only the stage widths, block counts and the
WideResNet dropout differ, so one implementation serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.models.denoise import DenoisingBlock


@dataclass(frozen=True)
class Stage:
    channels: int
    blocks: int
    stride: int
    """Stride of the stage's first block (the others keep the resolution)."""


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3 → BN-ReLU-[dropout]-conv3×3, plus the shortcut.

    When the shape changes, the 1×1 projection shortcut reads the pre-activated input, as in
    the original pre-activation and WideResNet code; otherwise the shortcut is the identity.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        shortcut: torch.Tensor = x if self.shortcut is None else self.shortcut(activated)
        out: torch.Tensor = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """Stem conv → stages of ``PreActBlock`` → BN-ReLU → global average pool → linear.

    The global (adaptive) pool makes it work for any input size and channel count; every
    stride-2 stage halves the resolution, rounding up, so tiny inputs still reach 1×1. With
    ``denoise`` (a ``DenoisingBlock`` kind), a block ``denoise<n>`` follows each stage ``n`` in
    ``denoise_after`` (1-based), as Xie et al. place theirs after residual stages; without it
    no module is added, so the state-dict keys are those of the plain network.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        stem_channels: int,
        stages: Sequence[Stage],
        dropout: float = 0.0,
        denoise: str | None = None,
        denoise_after: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        channels = stem_channels
        for number, stage in enumerate(stages, start=1):
            blocks: list[nn.Module] = []
            for index in range(stage.blocks):
                stride = stage.stride if index == 0 else 1
                blocks.append(PreActBlock(channels, stage.channels, stride, dropout))
                channels = stage.channels
            self.add_module(f"stage{number}", nn.Sequential(*blocks))
            if denoise is not None and number in denoise_after:
                self.add_module(f"denoise{number}", DenoisingBlock(channels, denoise))
        self.num_stages = len(stages)
        self.denoise_after = tuple(denoise_after) if denoise is not None else ()
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convs (fan-out), as both papers used; BN and linear keep PyTorch defaults."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, DenoisingBlock):
                module.reset_parameters()  # back to zero output conv: identity at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.stem(x)
        for number in range(1, self.num_stages + 1):
            out = getattr(self, f"stage{number}")(out)
            if number in self.denoise_after:
                out = getattr(self, f"denoise{number}")(out)
        out = self.pool(F.relu(self.bn(out))).flatten(1)
        logits: torch.Tensor = self.fc(out)
        return logits
