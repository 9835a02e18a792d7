"""Joining and leaving the group torchrun describes, and working on one rank alone inside it."""

from __future__ import annotations

import pytest
import torch.distributed as dist
from _spawn import run_ranks

import zoo
from zoo._distributed import all_gather_objects, broadcast_object, torchrun_group

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_without_torchrun_there_is_one_process_and_a_half_described_group_is_refused(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert zoo.init_distributed() is False and not dist.is_initialized()
    with torchrun_group() as world:
        assert world == zoo.World() and not world.distributed and world.is_main
    zoo.close_distributed()  # nothing to leave: no error
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert zoo.init_distributed() is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE is 2 but RANK, MASTER_ADDR is not set; start distributed "
                                           r"runs with `torchrun --nproc-per-node N"):
        zoo.init_distributed()
    assert not dist.is_initialized()


def _world_inside_and_alone(rank: int) -> dict:
    """What rank ``rank`` of a gloo group sees, in the group and inside ``single_process``."""
    seen = {"world": zoo.world(), "gathered": all_gather_objects(rank), "joined_again": zoo.init_distributed()}
    with zoo.single_process():
        seen["alone"] = zoo.world()
        seen["alone_gathered"] = all_gather_objects(rank)  # no collective: rank 0 alone would wait forever
        seen["alone_broadcast"] = broadcast_object(f"rank {rank}")
    seen["after"] = zoo.world()
    zoo.close_distributed()
    seen["left"] = not dist.is_initialized() and zoo.world() == zoo.World()
    return seen


def test_single_process_makes_one_rank_a_world_of_one_until_it_ends_and_close_leaves_the_group():
    seen = run_ranks(_world_inside_and_alone, 2)
    for rank in (0, 1):
        assert seen[rank]["world"] == zoo.World(rank, 2, rank) and seen[rank]["gathered"] == [0, 1]
        assert seen[rank]["joined_again"] is False  # a group is already initialised
        assert seen[rank]["alone"] == zoo.World() and seen[rank]["alone_gathered"] == [rank]
        assert seen[rank]["alone_broadcast"] == f"rank {rank}"
        assert seen[rank]["after"] == zoo.World(rank, 2, rank) and seen[rank]["left"]
