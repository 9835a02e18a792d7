"""Shared test configuration: GPU tests skip cleanly without CUDA; tests run on few threads."""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _user_cache(monkeypatch, tmp_path_factory):
    """Layer listings go to a fresh folder, never to ~/.cache."""
    monkeypatch.setenv("NEUROPROBE_CACHE", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """Run ``probe demo --quick`` once per test session; returns its output folder."""
    from probe.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    with pytest.MonkeyPatch.context() as patch:  # set up before the per-test cache folder: its own
        patch.setenv("NEUROPROBE_CACHE", str(tmp_path_factory.mktemp("demo-user-cache")))
        assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    return out
