"""Example models for the recipes in recipes/. Weights come from a fixed seed, so builds are reproducible."""
from __future__ import annotations

import torch
from torch import nn


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


class MLP(nn.Module):
    """The classic AOTInductor tutorial model: Linear(10,16), ReLU, Linear(16,1), Sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.fc2(self.relu(self.fc1(x))))


class SmallConvNet(nn.Module):
    """A small image classifier: three conv blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(),
            nn.Conv2d(width * 2, width * 2, 3, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(),
        )
        self.head = nn.Linear(width * 2, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        return self.head(features.mean(dim=(2, 3)))


class SequenceBlock(nn.Module):
    """A pre-norm transformer block over a long, variable-length latent sequence (DiT-like)."""

    def __init__(self, hidden: int = 64, heads: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, hidden * 3)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden * mlp_ratio), nn.GELU(), nn.Linear(hidden * mlp_ratio, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, seq, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (hidden // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(batch, seq, hidden))
        return x + self.mlp(self.norm2(x))


def mlp(seed: int = 0) -> nn.Module:
    _seeded(seed)
    return MLP()


def convnet(num_classes: int = 10, width: int = 32, seed: int = 0) -> nn.Module:
    _seeded(seed)
    model = SmallConvNet(num_classes, width)
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is actually checked
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def sequence_block(hidden: int = 64, heads: int = 4, seed: int = 0) -> nn.Module:
    _seeded(seed)
    return SequenceBlock(hidden, heads)


class TinyOutputs(MLP):
    """The MLP with outputs around 5e-8, far below float32's default atol (1e-4), like random-weight
    MobileNetV3 or EfficientNet: an artifact computing zeros must still fail verification."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


def tiny_outputs(seed: int = 0, scale: float = 1e-7) -> nn.Module:
    _seeded(seed)
    return TinyOutputs(scale)
