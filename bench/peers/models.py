"""The paper's ResNet-50 regressor written as a PyTorch user would: torchvision's resnet50 on
one input channel, then flatten, dense 256-128-64-32 (ReLU), dropout 0.01, one linear output."""
import torch
import torch.nn as nn
import torchvision


class ResNet50Regressor(nn.Module):
    def __init__(self, input_size=320):
        super().__init__()
        trunk = torchvision.models.resnet50(weights=None)
        trunk.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.features = nn.Sequential(*list(trunk.children())[:-2])  # drop avgpool and fc
        side = input_size // 32
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2048 * side * side, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 32), nn.ReLU(),
            nn.Dropout(0.01),
            nn.Linear(32, 1),
        )

    def forward(self, x):
        return self.head(self.features(x)).squeeze(1)


def msle(pred, target):
    return ((torch.log1p(pred.clamp(min=1e-7)) - torch.log1p(target)) ** 2).mean()
