"""core.distributed: the SCHEDULER forms, an unreachable scheduler, shared storage, retries, failures and cancel.

One LocalCluster of two worker processes serves the module (reached by its address, as an existing cluster
is); the unit functions below are top-level so the workers import them, as they import SatSeg's own.
"""

import os
import sys
import time

import pytest

pytest.importorskip("distributed")

from satseg_plugin.core.distributed import (
    ClusterError,
    Scheduler,
    check_shared_storage,
    cluster_client,
    parse_scheduler,
    parts_folder,
    run_units,
)
from satseg_plugin.core.errors import CanceledError, InputError, MissingDependencyError, OutputError
from satseg_plugin.core.progress import NullFeedback, RecordingFeedback
from satseg_plugin.core.staging import TEMP_PREFIX, Transaction


@pytest.fixture(scope="module")
def address():
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def client(address):
    with cluster_client(parse_scheduler(address), NullFeedback()) as c:
        yield c


def square(unit, feedback):
    return unit * unit


def write_part(unit, feedback):
    folder, name = unit
    with open(os.path.join(folder, name), "w") as handle:
        handle.write(name)
    return name


def fail_once(unit, feedback):
    """Raises on its first attempt (a marker file remembers it, across worker processes)."""
    marker = os.path.join(unit, "attempted")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def always_fail(unit, feedback):
    with open(os.path.join(unit[0], f"attempt-{time.time_ns()}"), "w"):
        pass
    raise RuntimeError("disk on fire")


def slow_until_canceled(unit, feedback):
    """Works in small steps, as a sweep does per tile row; writes a part only if it gets to the end."""
    folder, index = unit
    if index == 0:
        return "quick"
    for _ in range(600):
        if feedback.is_canceled():
            open(os.path.join(folder, f"stopped-{index}"), "w").close()
            raise CanceledError()
        time.sleep(0.05)
    open(os.path.join(folder, f"part-{index}"), "w").close()
    return "slow"


@pytest.mark.parametrize("text, expected", [
    ("", Scheduler()), ("  ", Scheduler()), (None, Scheduler()), ("local:2", Scheduler(workers=2)),
    ("LOCAL:1", Scheduler(workers=1)), ("tcp://10.0.0.5:8786", Scheduler(address="tcp://10.0.0.5:8786")),
    ("tls://head:8786", Scheduler(address="tls://head:8786"))])
def test_scheduler_forms(text, expected):
    assert parse_scheduler(text) == expected
    assert parse_scheduler(text).in_process == (expected == Scheduler())


@pytest.mark.parametrize("text", ["local:0", "local:", "local:two", "head:8786", "http://head:8786", "tcp://head",
                                  "tcp://:8786x"])
def test_bad_scheduler_names_the_parameter(text):
    with pytest.raises(InputError, match=r"^SCHEDULER: .*(local:2|tcp://host:port)"):
        parse_scheduler(text)


def test_unreachable_scheduler_is_a_clear_error_within_seconds():
    start = time.monotonic()
    with pytest.raises(InputError, match=r"^SCHEDULER: no Dask scheduler answered at 'tcp://127.0.0.1:1'"):
        with cluster_client(parse_scheduler("tcp://127.0.0.1:1"), NullFeedback()):
            pass
    assert time.monotonic() - start < 15


def test_a_scheduler_without_workers_is_a_clear_error(monkeypatch):
    import logging

    from distributed import LocalCluster

    from satseg_plugin.core import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 0.5)
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None,
                      silence_logs=logging.ERROR) as empty:
        with pytest.raises(InputError, match=r"^SCHEDULER: the Dask scheduler at 'tcp://.*' has no workers"):
            with cluster_client(parse_scheduler(empty.scheduler_address), NullFeedback()):
                pass


def test_missing_distributed_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependencyError, match=r"Python package '(dask\[distributed\]|distributed)'"):
        with cluster_client(parse_scheduler("local:1"), NullFeedback()):
            pass


def test_units_run_in_order_with_progress_over_finished_units(client):
    fb = RecordingFeedback()
    assert run_units(client, square, list(range(6)), fb, span=(10, 50)) == [i * i for i in range(6)]
    assert fb.progress and fb.progress == sorted(fb.progress) and fb.progress[-1] == 50
    assert all(10 < p <= 50 for p in fb.progress)


def test_shared_storage_is_checked_on_every_worker(client, tmp_path, unwritable_dir):
    source = tmp_path / "in.tif"
    source.write_bytes(b"raster")
    check_shared_storage(client, [(str(source), "INPUT")], str(tmp_path), "OUTPUT")
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]  # the probe files are gone
    with pytest.raises(InputError, match=r"^MODELS: Dask worker .* cannot read '.*gone.satseg'.*shared file system"):
        check_shared_storage(client, [(str(source), "INPUT"), (str(tmp_path / "gone.satseg"), "MODELS")],
                             str(tmp_path), "OUTPUT")
    with pytest.raises(OutputError, match=r"^OUTPUT: Dask worker .* cannot write into"):
        check_shared_storage(client, [(str(source), "INPUT")], unwritable_dir, "OUTPUT")


def test_a_unit_that_fails_once_is_retried(client, tmp_path):
    assert run_units(client, fail_once, [str(tmp_path)], NullFeedback()) == ["second attempt"]


def test_a_unit_that_keeps_failing_ends_the_run_and_its_parts_go(client, tmp_path):
    with Transaction() as run:
        with pytest.raises(ClusterError, match=r"^work unit [12] of 2 failed on the Dask cluster after 2 retries "
                                               r"\(RuntimeError: disk on fire\); nothing was written"):
            with parts_folder(run, str(tmp_path / "out.tif"), "OUTPUT") as folder:
                run_units(client, always_fail, [(folder, "a"), (folder, "b")], NullFeedback(), retries=2)
        # the bad unit ran three times, then the folder of parts was removed
    assert os.listdir(tmp_path) == []


def test_cancel_stops_running_units_and_removes_the_parts(client, tmp_path):
    seen = []
    with Transaction() as run:
        with pytest.raises(CanceledError):
            with parts_folder(run, str(tmp_path / "out.tif"), "OUTPUT") as folder:
                start = time.monotonic()
                try:
                    run_units(client, slow_until_canceled, [(folder, i) for i in range(3)],
                              RecordingFeedback(cancel_after=1))
                finally:
                    seen = sorted(os.listdir(folder))
                    elapsed = time.monotonic() - start
    # the running units saw the cancel within about a second each (not after their 30 s of work)
    assert elapsed < 20
    assert "part-1" not in seen and "part-2" not in seen and any(n.startswith("stopped-") for n in seen)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)] and os.listdir(tmp_path) == []


def die_once(unit, feedback):
    """Kills its worker process on the first attempt (a marker file remembers it): the nanny starts a new
    worker and the scheduler runs the unit again."""
    marker = os.path.join(unit, "died")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "after a restart"


def always_die(unit, feedback):
    os._exit(1)


def test_a_unit_whose_worker_is_killed_runs_again(client, tmp_path):
    assert run_units(client, die_once, [str(tmp_path)], NullFeedback()) == ["after a restart"]


def test_a_unit_that_keeps_killing_its_workers_is_a_clear_error(client, tmp_path):
    with pytest.raises(ClusterError, match=r"^the Dask workers running work unit 1 of 1 died repeatedly"):
        run_units(client, always_die, [str(tmp_path)], NullFeedback())
