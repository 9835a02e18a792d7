"""probe.study.DemoContext: what the demo's steps share."""

import zoo
from probe.study import DEMO_STEPS, DemoContext


def test_each_dataset_is_loaded_once_and_shared(tmp_path):
    ctx = DemoContext(out=tmp_path)
    test = ctx.dataset("digits")
    assert ctx.dataset("digits", "test") is test and ctx.datasets["digits", "test"] is test
    assert len(test) == len(zoo.load_dataset("digits", split="test"))
    patches = ctx.dataset("natural-patches", "train", n_patches=32)
    assert len(patches) == 32 and ctx.dataset("natural-patches", "train") is patches  # options: first load only


def test_demo_steps_run_in_the_report_order():
    titles = ["Zoo", "Layers", "Similarity", "Units", "Subspaces", "Transfer", "Real network"]
    assert [title for title, _ in DEMO_STEPS] == titles
    assert all(callable(step) for _, step in DEMO_STEPS)
