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


class LockHolder:
    """Another process holding ``zoo._files.writer_lock`` on a folder (forked, so it starts at once).

    Use as a context manager: the lock is held inside the block (``holder.pid`` is the holder's
    PID) and released on exit; ``kill()`` ends the holder as a crash would.
    """

    def __init__(self, folder, what="folder"):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._ready, self._release = context.Event(), context.Event()
        self._process = context.Process(target=_hold, args=(folder, what, self._ready, self._release))

    def __enter__(self):
        self._process.start()
        assert self._ready.wait(60), "the lock holder did not start"
        self.pid = self._process.pid
        return self

    def kill(self):
        self._process.kill()
        self._process.join(30)

    def __exit__(self, *exc_info):
        if self._process.is_alive():  # setting the event would wait forever for a killed holder to wake
            self._release.set()
        self._process.join(30)


def _hold(folder, what, ready, release):
    from zoo._files import writer_lock

    with writer_lock(folder, what=what):
        ready.set()
        release.wait(60)
