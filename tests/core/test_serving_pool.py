"""compeft.serving.AdapterPool: exact outputs after every activation, least-recently-used eviction in both
tiers (GPU slots, host budget), refusals, and a serving thread activating while another adds."""

from __future__ import annotations

import threading

import pytest
import torch
from serving_cases import outputs

from compeft.errors import AdapterMismatchError, OptionError, PoolError
from compeft.fastload import ResidentArtifact
from compeft.serving import AdapterPool

KEYS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def case(serving_cases):
    case = serving_cases("lora-all-linear")
    for i, key in enumerate(KEYS):
        case.adapter(key, seed=None if key == "a" else 10 + i)
    return case


@pytest.fixture(scope="module")
def references(case):
    return {key: case.reference(key) for key in KEYS}


def test_slots_are_evicted_least_recently_used_first(case, references):
    pool = AdapterPool(case.live("a"), gpu_slots=2)
    for key in KEYS[:3]:
        pool.add(key, case.adapter(key)[1])
    holds = []
    for key in ("a", "b", "a", "c", "b"):
        pool.activate(key)
        assert torch.equal(outputs(pool.model), references[key]), key
        holds.append([s["holds"] for s in pool.stats()["slots"]])
    # a → slot 0, b → slot 1, a hit, c replaces b (least recently used), b replaces a
    assert holds == [["a", None], ["a", "b"], ["a", "b"], ["a", "c"], ["b", "c"]]
    stats = pool.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"], stats["active"]) == (1, 4, 2, "b")
    assert [s["adapter_name"] for s in stats["slots"]] == ["default", "default_compeft_slot1"]
    assert stats["bytes_held"] == sum(ResidentArtifact.open(case.adapter(k)[1]).nbytes for k in KEYS[:3])


def test_host_budget_drops_least_recently_used_copies_and_fetches_them_again(case, references):
    size = ResidentArtifact.open(case.adapter("a")[1]).nbytes
    pool = AdapterPool(case.live("a"), host_budget_bytes=2 * size + size // 2)
    pool.add("a", case.adapter("a")[1])
    pool.add("b", case.adapter("b")[1])
    pool.activate("a")
    pool.add("c", case.adapter("c")[1])  # b is the least recently used copy
    assert pool.stats()["resident"] == ["a", "c"] and pool.stats()["host_evictions"] == 1
    pool.activate("b")  # fetched again from its directory; c's copy goes (a is still active while b is fetched)
    assert torch.equal(outputs(pool.model), references["b"])
    stats = pool.stats()
    assert stats["refetches"] == 1 and stats["resident"] == ["a", "b"] and stats["bytes_held"] <= 2 * size + size // 2
    # an in-memory artifact cannot be fetched again: it stays, and a budget it cannot meet refuses the add
    pool.add("d", ResidentArtifact.open(case.adapter("d")[1]))
    with pytest.raises(PoolError, match="host budget .* cannot hold adapter 'e'"):
        pool.add("e", ResidentArtifact.open(case.adapter("a")[1]))
    assert "e" not in pool and pool.stats()["resident"] == ["b", "d"]
    pool.activate("d")
    assert torch.equal(outputs(pool.model), references["d"])


def test_refusals_leave_the_pool_as_it_was(case, references, serving_cases):
    pool = AdapterPool(case.live("a"))
    pool.add("a", case.adapter("a")[1])
    pool.activate("a")
    with pytest.raises(AdapterMismatchError, match="it is a IA3 adapter"):
        pool.add("x", serving_cases("ia3").adapter("a")[1])
    with pytest.raises(PoolError, match="already in the pool"):
        pool.add("a", case.adapter("b")[1])
    with pytest.raises(PoolError, match="is active"):
        pool.remove("a")
    with pytest.raises(PoolError, match="no adapter 'zzz'"):
        pool.activate("zzz")
    assert pool.stats()["known"] == ["a"]
    assert torch.equal(outputs(pool.model), references["a"])
    pool.add("b", case.adapter("b")[1])
    pool.activate("b")
    pool.remove("a")
    assert pool.stats()["known"] == ["b"]
    with pytest.raises(OptionError, match="gpu_slots"):
        AdapterPool(case.live("a"), gpu_slots=0)
    with pytest.raises(PoolError, match="no adapter"):
        pool.activate("a")


def test_a_serving_thread_activates_while_another_adds(case, references):
    pool = AdapterPool(case.live("a"), gpu_slots=2)
    pool.add("a", case.adapter("a")[1])
    pool.add("b", case.adapter("b")[1])
    errors: list[BaseException] = []

    def add_more() -> None:
        try:
            for round_ in range(3):
                for key in ("c", "d"):
                    name = f"{key}{round_}"
                    pool.add(name, case.adapter(key)[1])
                    if round_ < 2:
                        pool.remove(name)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    adder = threading.Thread(target=add_more)
    adder.start()
    mismatches = 0
    for i in range(30):
        key = "ab"[i % 2] if i % 5 else "b"
        pool.activate(key)
        mismatches += not torch.equal(outputs(pool.model), references[key])
    adder.join()
    assert not errors and mismatches == 0
    assert set(pool.stats()["known"]) == {"a", "b", "c2", "d2"}
    for name in ("c2", "d2", "a"):
        pool.activate(name)
        assert torch.equal(outputs(pool.model), references[name[0]])
