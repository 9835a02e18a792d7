"""The memory plan (`probe._plan`): its bytes against real recordings, its budgets, and `--plan` / `--max-*` flags."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import probe
from analyses import StreamingCKA
from probe._plan import MemoryBudgetError, parse_size, plan_recording
from probe.cli import main

N = 37  # not a multiple of the batch: the last batch is short
BATCH = 8
LAYERS = ["0", "1", "3", "4"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Tanh())


def _stimuli() -> torch.Tensor:
    return torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))


OPTIONS = {"reduce": {"1": "flatten"}, "project": {"1": 10}, "batch_size": BATCH}


def _rows(plan, item):
    frame = plan.to_frame()
    return frame[frame["item"] == item].set_index("layer")


def _npy_data_bytes(path) -> int:
    """A .npy file's bytes after its header."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
        read_header(handle)
        return path.stat().st_size - handle.tell()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_planned_disk_is_the_layer_files_without_headers(tmp_path, dtype):
    model, x = _model(), _stimuli()
    plan = plan_recording(model, x, LAYERS, dtype=dtype, out=tmp_path / "rec", device="cpu", **OPTIONS)
    assert not (tmp_path / "rec").exists()  # planning writes nothing
    recording = probe.record(model, x, LAYERS, dtype=dtype, out=tmp_path / "rec", device="cpu", progress=False,
                             **OPTIONS)
    stored = _rows(plan, "stored rows")
    files = sorted((tmp_path / "rec" / "layers").glob("*.npy"))
    assert [int(stored.loc[layer, "disk_bytes"]) for layer in recording.layers] == [_npy_data_bytes(f) for f in files]
    assert int(_rows(plan, "labels").loc["labels", "disk_bytes"]) == _npy_data_bytes(tmp_path / "rec" / "labels.npy")
    assert plan.n_units == {layer: recording[layer].shape[1] for layer in recording.layers}
    assert plan.n_units["1"] == 10  # the flattened 144 units, projected
    # with out, the host keeps one batch of rows per layer (on the CPU: one buffer)
    assert int(stored.loc["3", "ram_bytes"]) == BATCH * 5 * np.dtype(dtype).itemsize


def test_planned_ram_of_a_memory_recording_and_its_reducers_is_their_nbytes():
    model, x = _model(), _stimuli()
    reducers = {"topk": lambda: probe.TopK(3, bottom_k=2), "moments": lambda: probe.MomentsReducer("flatten", project=6)}
    layers = ["0", "1", "3"]
    plan = plan_recording(model, x, layers, reducers=reducers, device="cpu", **OPTIONS)
    recording = probe.record(model, x, layers, reducers=reducers, device="cpu", progress=False, **OPTIONS)
    stored = _rows(plan, "stored rows")
    assert [int(stored.loc[layer, "ram_bytes"]) for layer in layers] == [recording[layer].nbytes for layer in layers]
    assert int(_rows(plan, "labels").loc["labels", "ram_bytes"]) == recording.labels.nbytes
    assert (stored["disk_bytes"] == 0).all()
    for name in reducers:
        planned = _rows(plan, name)
        for layer in layers:
            result = recording.extras[name][layer]
            arrays = [value for value in vars(result).values() if isinstance(value, np.ndarray)]
            assert int(planned.loc[layer, "ram_bytes"]) == sum(array.nbytes for array in arrays), (name, layer)


def test_streaming_cka_state_is_planned_per_layer():
    model, x = _model(), _stimuli()
    made = []

    def factory():
        made.append(StreamingCKA(pool="mean"))
        return made[-1]

    layers = ["0", "3", "4"]
    plan = plan_recording(model, x, layers, reducers={"cka": factory}, batch_size=BATCH, device="cpu")
    recording = probe.record(model, x, layers, reducers={"cka": factory}, batch_size=BATCH, device="cpu",
                             progress=False)
    reducer = made[-1]
    state = sum(t.nbytes for t in reducer.comoments.values()) + sum(m.nbytes for m in reducer.means)
    raw_copies = sum(BATCH * math.prod(shape) * 4 for shape in plan.shapes.values())  # fed after the pass
    planned = _rows(plan, "cka")
    assert int(planned["device_bytes"].sum()) == state + raw_copies
    assert int(planned["ram_bytes"].sum()) == recording.extras["cka"].values.nbytes


class _Sized(probe.Reducer):
    def planned_bytes(self, layer_shape, n_stimuli):
        return {"device": 1, "ram": n_stimuli * math.prod(layer_shape), "disk": 0}

    def update(self, activations, stimulus_index):
        pass

    def result(self):
        return None


class _Unsized(_Sized):
    planned_bytes = None


def test_a_reducer_sizes_itself_or_is_listed_as_unknown():
    plan = plan_recording(_model(), _stimuli(), ["3"], reducers={"sized": _Sized, "mystery": _Unsized}, device="cpu")
    assert int(_rows(plan, "sized").loc["3", "ram_bytes"]) == N * 5
    mystery = _rows(plan, "mystery").loc["3"]
    assert mystery.isna()[["device_bytes", "ram_bytes", "disk_bytes"]].all() and "planned_bytes" in mystery["note"]
    assert plan.unknown == ["3: mystery"]
    assert plan.totals["ram_bytes"] == int(plan.to_frame()["ram_bytes"].sum())  # known rows only
    assert "unknown" in str(plan) and "3: mystery" in str(plan)


def test_a_distributed_plan_holds_the_exchanged_rows_in_memory_and_the_recording_once_on_disk(tmp_path):
    model, x = _model(), _stimuli()
    one, two = (plan_recording(model, x, ["3"], world_size=w, device="cpu") for w in (1, 2))
    assert int(_rows(two, "stored rows").loc["3", "ram_bytes"]) == 2 * N * 5 * 4  # the whole, and the others' in transit
    assert int(_rows(one, "stored rows").loc["3", "ram_bytes"]) == N * 5 * 4
    on_disk = [plan_recording(model, x, ["3"], world_size=w, out=tmp_path, device="cpu") for w in (1, 2)]
    assert on_disk[0].totals["disk_bytes"] == on_disk[1].totals["disk_bytes"]


def test_check_names_the_layer_where_the_cumulative_total_crosses_the_budget(tmp_path):
    plan = plan_recording(_model(), _stimuli(), LAYERS, out=tmp_path / "rec", device="cpu", **OPTIONS)
    disk = _rows(plan, "stored rows")["disk_bytes"].astype(int)
    below_layer_3 = int(disk.loc["0"] + disk.loc["1"] + disk.loc["3"]) - 1
    with pytest.raises(MemoryBudgetError, match=r"layer '3'") as raised:
        plan.check(max_disk=below_layer_3)
    message = str(raised.value)
    assert str(plan.totals["disk_bytes"]) in message and str(below_layer_3) in message
    assert "dtype=... 'float16'" in message and "project=..." in message and "reduce=... 'spatial-mean'" in message
    assert isinstance(raised.value, ValueError)
    plan.check(max_disk=plan.totals["disk_bytes"], max_ram=f"{plan.totals['ram_bytes']}B")  # exactly fits


@pytest.mark.parametrize(("text", "expected"), [("8GiB", 8 * 2**30), ("500MB", 500 * 10**6), ("1.5e9", 1_500_000_000),
                                                ("2 kib", 2048), ("123", 123)])
def test_sizes_are_read_in_decimal_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["8 gigs", "GiB", "-1MB", "1.2.3"])
def test_a_misspelt_size_is_refused_with_the_spellings(text):
    with pytest.raises(ValueError, match="8GiB, 500MB, 1.5e9"):
        parse_size(text)


# -- the command line ------------------------------------------------------------------------------
MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    """
)


@pytest.fixture
def own_model(tmp_path):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    return f"{tmp_path / 'net.py'}:build"


def _record(model, out, *extra):
    return main(["record", model, "--dataset", "digits", "--layers", "0", "3", "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def test_record_plan_prints_the_plan_and_records_nothing(own_model, tmp_path, capsys):
    assert _record(own_model, tmp_path / "rec", "--plan") == 0
    out = capsys.readouterr().out
    assert "stored rows" in out and "total:" in out and "KiB" in out
    assert not (tmp_path / "rec").exists()


def test_record_refuses_a_recording_over_its_disk_budget(own_model, tmp_path, capsys):
    # layer 0 (4 channels after spatial-mean) fits in 8 KiB; layer 3 (10 units) makes it cross
    assert _record(own_model, tmp_path / "rec", "--max-disk", "8KiB") == 2
    err = capsys.readouterr().err
    assert "layer '3'" in err and "8.0 KiB" in err and "--dtype ... 'float16'" in err and "--project ..." in err
    assert not (tmp_path / "rec").exists()
    assert _record(own_model, tmp_path / "rec", "--max-disk", "1MB", "--max-ram", "1MB") == 0
    assert probe.Recording.load(tmp_path / "rec").n_stimuli == 360


def test_record_refuses_a_misspelt_size(own_model, tmp_path, capsys):
    assert _record(own_model, tmp_path / "rec", "--max-ram", "8gigs") == 2
    assert "'8gigs'" in capsys.readouterr().err


def _study(tmp_path, analyses):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""
        out = "out"
        batch_size = 8
        [data]
        dataset = "digits"
        limit = 20
        [[models]]
        name = "net"
        factory = "net.py:build"
        layers = ["0", "3"]
        [analyses]
        {analyses}
    """))
    return tmp_path / "study.toml"


def test_analyze_plan_lists_the_cache_and_top_k_passes_and_records_nothing(tmp_path, capsys):
    study = _study(tmp_path, "units = { k = 2 }")
    assert main(["analyze", str(study), "--plan", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "net: layers (cache)" in out and "net: top-k (units analysis)" in out
    assert not (tmp_path / "out").exists()
    assert main(["analyze", str(study), "--max-disk", "100B", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model 'net'" in err and "layer '0'" in err
    assert not (tmp_path / "out").exists()


def test_a_study_writes_what_its_plan_says(tmp_path):
    from probe.study import Study
    from probe.study._plan_study import plan_study

    study = Study.from_file(_study(tmp_path, "layers = {}"))
    plan = plan_study(study.spec, device="cpu")
    study.run(progress=False, device="cpu")
    files = sorted((tmp_path / "out" / "cache").glob("rec-*/layers/*.npy"))
    planned = plan.to_frame().query("item == 'stored rows'")["disk_bytes"].astype(int).tolist()
    assert planned == [_npy_data_bytes(path) for path in files]
