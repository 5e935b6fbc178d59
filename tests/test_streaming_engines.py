"""The streaming-engines benchmark's own logic, without any engine installed: the resume verdict, the
memory reading, and the skip of a missing engine."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from benchmarks import streaming_engines
from benchmarks.streaming_engines import ENGINES, compare, descendants, high_water_kb, installed, stop_point, verdict


def test_compare_counts_repeats_and_misses_as_multisets() -> None:
    epoch = [3, 1, 2, 0]
    assert compare([0, 1, 2, 3], epoch) == (0, 0)  # the order does not matter
    assert compare([0, 1, 1, 2, 3], epoch) == (1, 0)
    assert compare([0, 1, 1, 2], epoch) == (1, 1)  # a repeat does not hide a miss
    assert compare([0, 0], [0, 0, 0]) == (0, 1)  # an epoch that pads (repeats) a sample expects it twice
    assert verdict([1, 0, 2, 3], epoch) == "exact"
    assert verdict([0, 1, 1], epoch) == "1 samples repeated, 2 missed"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_memory_is_read_for_this_process_and_those_under_it() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]) as child:
        try:
            assert {os.getpid(), child.pid} <= set(descendants(os.getpid()))
            assert high_water_kb(os.getpid()) > 1024  # an interpreter with torch: over a MiB
            assert high_water_kb(child.pid) > 0
        finally:
            child.kill()
    assert high_water_kb(child.pid) == 0  # gone


def test_an_engine_that_is_not_installed_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = dataclasses.replace(ENGINES["webdataset"], distribution="firstlight-no-such-engine")
    monkeypatch.setitem(streaming_engines.ENGINES, "webdataset", missing)
    assert not installed("webdataset")
    assert (
        capsys.readouterr().out == "webdataset: not installed (pip install firstlight-no-such-engine==1.0.2), skipped\n"
    )
    assert installed("litdata")  # the project's own dependency


def test_the_epoch_stops_before_its_last_batch() -> None:
    assert [stop_point(batches) for batches in (2, 3, 8, 157)] == [1, 1, 3, 63]
    with pytest.raises(RuntimeError, match="too few"):
        stop_point(1)
