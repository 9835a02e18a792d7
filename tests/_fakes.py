"""Stand-ins shared by several test files."""

from torch import nn


class FakeRecording:
    """The Recording interface the similarity maps rely on: ``.layers``, ``rec[layer]``, ``.labels``."""

    def __init__(self, arrays, labels):
        self._arrays, self.labels = arrays, labels

    @property
    def layers(self):
        return list(self._arrays)

    def __getitem__(self, layer):
        return self._arrays[layer]


class DetachedConv(nn.Module):
    """A conv layer behind a rounding that cuts the gradient: its receptive field can be neither
    computed in closed form nor measured by gradients."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x.detach().round())
