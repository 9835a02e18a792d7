"""Recording under torch.distributed (2 gloo processes) equals recording in one process."""

from __future__ import annotations

import functools
import json
import pickle

import numpy as np
import pytest
import torch
from _spawn import run_ranks
from torch import nn
from torch.multiprocessing import ProcessRaisedException
from torch.utils.data import DataLoader, TensorDataset

import probe
from analyses import StreamingCKA
from probe._shards import batch_shards

LAYERS = ["1", "3", "5"]
BATCH = 8
REDUCERS = {
    "topk": functools.partial(probe.TopK, 3, bottom_k=2),
    "units": functools.partial(probe.TopK, 4, distinct_stimuli=False),
    "moments": probe.MomentsReducer,
    "cka": StreamingCKA,
    "cka_minibatch": functools.partial(StreamingCKA, estimator="minibatch"),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(384, 5)
    ).eval()


def _data(n: int = 50) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def _record(**options) -> probe.Recording:
    return probe.record(_model(), _data(), LAYERS, batch_size=BATCH, device="cpu", progress=False, **options)


def _contents(recording: probe.Recording) -> dict:
    return {
        "arrays": {layer: np.array(recording[layer]) for layer in recording.layers},
        "labels": np.array(recording.labels),
        "extras": recording.extras,
    }


def _record_in_memory_and_on_disk(rank: int, folder: str) -> None:
    with open(f"{folder}/memory-{rank}.pkl", "wb") as handle:
        pickle.dump(_contents(_record(reducers=REDUCERS)), handle)
    from_loader = probe.record(_model(), DataLoader(_data(), batch_size=BATCH), LAYERS, device="cpu", progress=False)
    with open(f"{folder}/loader-{rank}.pkl", "wb") as handle:
        pickle.dump(_contents(from_loader), handle)
    with open(f"{folder}/disk-{rank}.pkl", "wb") as handle:
        pickle.dump(_contents(_record(reducers=REDUCERS, out=f"{folder}/store", flush_every=0)), handle)
    refusals = {}
    other = _model()
    if rank == 1:  # a rank whose model was built with another seed
        torch.nn.init.normal_(other[0].weight, generator=torch.Generator().manual_seed(5))
    for name, reducer in [("weights", None), ("merge", _NoMerge)]:
        try:
            probe.record(other if name == "weights" else _model(), _data(), LAYERS, batch_size=BATCH, device="cpu",
                         progress=False, reducers=None if reducer is None else {"custom": reducer})
        except ValueError as err:
            refusals[name] = str(err)
    with open(f"{folder}/refusals-{rank}.json", "w") as handle:
        json.dump(refusals, handle)
    _record_and_die(rank, f"{folder}/killed", die=False)  # resume the store a killed run left
    _record_with_the_cli(rank, folder)
    _run_study(rank, f"{folder}/study")


def _record_with_the_cli(rank: int, folder: str) -> None:
    """``probe record`` of an untrained zoo model, as each process of ``torchrun`` runs it."""
    import contextlib
    import io

    from probe.cli import main

    torch.manual_seed(100 + rank)  # processes whose random streams differ build different untrained weights
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["record", "cnn", "--dataset", "digits", "--split", "test", "--batch-size", "64",
                     "--out", f"{folder}/cli", "--no-progress"])
    with open(f"{folder}/cli-{rank}.json", "w") as handle:
        json.dump({"code": code, "printed": printed.getvalue()}, handle)


class _NoMerge(probe.Reducer):
    def update(self, activations, stimulus_index):
        pass

    def result(self):
        return None


class _Dies(Exception):
    pass


def _record_and_die(rank: int, folder: str, die: bool) -> None:
    model = _model()
    calls = []

    def hook(*_):
        calls.append(1)
        if die and rank == 1 and len(calls) == 3:  # after two flushed batches of its shard
            raise _Dies("killed")

    model[0].register_forward_hook(hook)
    probe.record(model, _data(), LAYERS, batch_size=BATCH, device="cpu", progress=False, out=f"{folder}/store",
                 flush_every=0, resume=not die)


@pytest.fixture(scope="module")
def two_process_recordings(tmp_path_factory):
    """Two spawns of 2 processes: one killed while recording, then one that records everything the tests check
    (and resumes the killed recording); what happened in between is kept for the tests."""
    folder = tmp_path_factory.mktemp("distributed")
    with pytest.raises(ProcessRaisedException):  # rank 1 dies; rank 0 is stopped (or fails waiting for it)
        run_ranks(_record_and_die, 2, str(folder / "killed"), True)
    killed = {
        "manifest": json.loads((folder / "killed" / "store" / "manifest.json").read_text()),
        "progress": [json.loads((folder / "killed" / "store" / "progress" / f"rank-00{r}.json").read_text()) for r in (0, 1)],
        "refusals": [],
    }
    for options in ({}, {"resume": True}):  # one process may not take it over, silently or not
        with pytest.raises(FileExistsError) as refused:
            _record(out=folder / "killed" / "store", **options)
        killed["refusals"].append(str(refused.value))
    run_ranks(_record_in_memory_and_on_disk, 2, str(folder))
    loaded = {"killed": killed}
    for kind in ("memory", "disk", "loader"):
        for rank in (0, 1):
            with open(folder / f"{kind}-{rank}.pkl", "rb") as handle:
                loaded[kind, rank] = pickle.load(handle)
    return folder, loaded


def _same_topk(a, b) -> None:
    for field in ("top_values", "top_stimulus", "top_position", "bottom_values", "bottom_stimulus", "bottom_position", "pooled"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.n_stimuli == b.n_stimuli


def _same_as_one_process(got: dict, want: dict) -> None:
    assert got["arrays"].keys() == want["arrays"].keys()
    for layer in want["arrays"]:
        assert np.array_equal(got["arrays"][layer], want["arrays"][layer]), layer  # bit-identical rows
    np.testing.assert_array_equal(got["labels"], want["labels"])
    for name in ("topk", "units"):
        for layer in LAYERS:
            _same_topk(got["extras"][name][layer], want["extras"][name][layer])
    for layer in LAYERS:
        mine, theirs = got["extras"]["moments"][layer], want["extras"]["moments"][layer]
        assert mine.n == theirs.n == 50
        np.testing.assert_allclose(mine.mean, theirs.mean, rtol=0, atol=1e-10)
        np.testing.assert_allclose(mine.scatter, theirs.scatter, rtol=1e-12, atol=1e-10)
    for name in ("cka", "cka_minibatch"):
        np.testing.assert_allclose(got["extras"][name].values, want["extras"][name].values, rtol=0, atol=1e-10)


def test_batch_shards_cover_every_stimulus_once_in_whole_batches():
    for n, batch, size in [(50, 8, 2), (7, 2, 3), (64, 8, 8), (1000, 7, 5)]:
        shards = batch_shards(n, batch, size)
        assert [i for shard in shards for i in shard] == list(range(n))
        assert all(shard.start % batch == 0 and len(shard) > 0 for shard in shards)
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        batch_shards(20, 8, 4)


def test_two_processes_record_in_memory_what_one_process_records(two_process_recordings):
    _, loaded = two_process_recordings
    want = _contents(_record(reducers=REDUCERS))
    _same_as_one_process(loaded["memory", 0], want)
    _same_as_one_process(loaded["memory", 1], want)  # every rank holds the whole recording


def test_two_processes_record_a_dataloader_as_one_process(two_process_recordings):
    _, loaded = two_process_recordings
    want = _record()
    for rank in (0, 1):
        for layer in LAYERS:
            assert np.array_equal(loaded["loader", rank]["arrays"][layer], want[layer]), layer
        np.testing.assert_array_equal(loaded["loader", rank]["labels"], want.labels)


@pytest.mark.filterwarnings("ignore:result of reducer")
def test_two_processes_write_one_store_equal_to_one_process(two_process_recordings, tmp_path):
    folder, loaded = two_process_recordings
    want = _contents(_record(reducers=REDUCERS, out=tmp_path / "one"))
    _same_as_one_process(loaded["disk", 0], want)
    _same_as_one_process(loaded["disk", 1], want)
    reloaded = probe.Recording.load(folder / "store")  # checksums verified
    _same_as_one_process({**_contents(reloaded), "extras": loaded["disk", 0]["extras"]}, want)
    manifest = json.loads((folder / "store" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["shards"] == [{"start": 0, "stop": 32}, {"start": 32, "stop": 50}]
    assert not (folder / "store" / "progress").exists()  # progress files go once the recording completes
    for layer in LAYERS:  # the files on disk are byte for byte those of one process
        name = manifest["layers"][layer]["file"]
        assert (folder / "store" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_ranks_refuse_other_weights_and_reducers_that_cannot_merge(two_process_recordings):
    folder, _ = two_process_recordings
    for rank in (0, 1):
        refusals = json.loads((folder / f"refusals-{rank}.json").read_text())
        assert "rank 1 holds another model than rank 0" in refusals["weights"]
        assert "has no merge(other)" in refusals["merge"]


def test_probe_record_under_two_processes_speaks_once_and_records_rank0s_weights(two_process_recordings):
    folder, _ = two_process_recordings
    ranks = [json.loads((folder / f"cli-{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["code"] == ranks[1]["code"] == 0
    assert "recorded 360 stimuli x 5 layers" in ranks[0]["printed"] and "by 2 processes" in ranks[0]["printed"]
    assert ranks[1]["printed"] == ""  # one process speaks for the run
    recording = probe.Recording.load(folder / "cli")  # complete, checksums verified
    # The untrained cnn was built at random in each process; both shards must come from rank 0's weights.
    # Its logits are one affine map of relu_fc1 over all 360 stimuli only if both ranks used the same fc2.
    hidden = np.hstack([np.asarray(recording["relu_fc1"], dtype=np.float64), np.ones((360, 1))])
    logits = np.asarray(recording["fc2"], dtype=np.float64)
    fitted = hidden @ np.linalg.lstsq(hidden, logits, rcond=None)[0]
    assert np.abs(fitted - logits).max() < 1e-5


def test_a_killed_rank_resumes_where_each_rank_stopped(two_process_recordings):
    folder, loaded = two_process_recordings
    killed = loaded["killed"]
    assert not killed["manifest"]["complete"]
    assert killed["progress"][1]["n_done"] == 48  # rank 1 (stimuli 32..49) flushed two batches before it died
    assert 8 <= killed["progress"][0]["n_done"] <= 32  # rank 0 (stimuli 0..31) got as far as it got
    assert "resume=True" in killed["refusals"][0]
    assert "started by 2 processes" in killed["refusals"][1]
    resumed = probe.Recording.load(folder / "killed" / "store")  # checksums verified
    want = _record()
    for layer in LAYERS:
        assert np.array_equal(np.array(resumed[layer]), want[layer]), layer
    np.testing.assert_array_equal(resumed.labels, want.labels)


def _study(out: str) -> dict:
    return {"data": {"dataset": "digits", "limit": 40}, "batch_size": 16,
            "models": [{"name": "random cnn", "arch": "cnn"}], "analyses": {"layers": {}}, "out": out}


def _run_study(rank: int, out: str) -> None:
    from probe.study import Study

    result = Study.from_dict(_study(out)).run(progress=False, device="cpu")
    with open(f"{out}-rank{rank}.json", "w") as handle:
        json.dump({"report": None if result.report is None else str(result.report),
                   "recorded": result.recorded["random cnn"]}, handle)


def test_a_study_under_two_processes_records_together_and_reports_once(two_process_recordings):
    from probe.study import Study

    folder, _ = two_process_recordings
    ranks = [json.loads((folder / f"study-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["report"] == str(folder / "study" / "report.html") and ranks[1]["report"] is None
    assert ranks[0]["recorded"] == ranks[1]["recorded"] != []
    one = Study.from_dict(_study(str(folder / "one-study"))).run(progress=False, device="cpu")
    two = Study.from_dict(_study(str(folder / "study"))).run(progress=False, device="cpu")
    assert two.recorded["random cnn"] == []  # the cache written by two processes is complete for one
    for layer in one.recordings["random cnn"].layers:
        assert np.array_equal(np.array(two.recordings["random cnn"][layer]), np.array(one.recordings["random cnn"][layer]))


def test_a_rank_that_cannot_see_rank0s_folder_says_it_must_be_shared(tmp_path):
    from probe._store import ShardSink

    with pytest.raises(FileNotFoundError, match="file system that every process sees"):
        ShardSink(tmp_path / "not-created-here", 1, range(32, 50))
