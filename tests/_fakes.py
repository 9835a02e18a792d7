"""Stand-ins shared by several test files."""


class FakeRecording:
    """The Recording interface the similarity maps rely on: ``.layers``, ``rec[layer]``, ``.labels``."""

    def __init__(self, arrays, labels):
        self._arrays, self.labels = arrays, labels

    @property
    def layers(self):
        return list(self._arrays)

    def __getitem__(self, layer):
        return self._arrays[layer]
