"""Thread settings for shared machines: OpenMP's wait policy before torch, fair thread shares."""

import os
import subprocess
import sys

import pytest

from cainnflow.threads import OPENMP_DEFAULTS, configure_openmp, fair_threads


@pytest.mark.parametrize("jobs, cores, expected", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (0, 4, 4)])
def test_fair_threads_divide_the_cores(jobs, cores, expected):
    assert fair_threads(jobs, cores) == expected


def test_importing_cainnflow_sets_openmp_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in (*OPENMP_DEFAULTS, "OMP_WAIT_POLICY")}
    code = (
        "import os, cainnflow, sys; import torch; "
        "print(os.environ['KMP_BLOCKTIME'], os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    # Intel OpenMP sleeps at once; GNU OpenMP keeps its bounded spin (no wait policy forced)
    assert out.stdout.split() == ["0", "unset"]


def test_a_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("KMP_BLOCKTIME", "200")
    configure_openmp()
    assert os.environ["KMP_BLOCKTIME"] == "200"


def test_cpu_trainings_register_and_keep_the_threads_they_started_with(tmp_path, monkeypatch):
    import torch

    from cainnflow.threads import cpu_job, running_cpu_jobs

    monkeypatch.setenv("CAINNFLOW_JOBS_DIR", str(tmp_path))
    start = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        (tmp_path / "999999999-1-dead").touch()  # a dead process's entry is not counted
        assert running_cpu_jobs() == 0 and not (tmp_path / "999999999-1-dead").exists()
        with cpu_job("cpu") as job:
            assert running_cpu_jobs() == 1 and job.rebalance() == 4 and job.others == 0
            (tmp_path / f"{os.getpid()}-0-other").touch()  # a second training starts
            # Its thread count stays (same float sums whatever the load); it takes turns instead.
            assert job.rebalance() == 4 and torch.get_num_threads() == 4 and job.others == 1
            with job.turn():
                assert (tmp_path / ".turns").exists()
            assert running_cpu_jobs() == 2  # the lock file is not a job
            (tmp_path / f"{os.getpid()}-0-other").unlink()
            assert job.rebalance() == 4 and job.others == 0
            (tmp_path / f"{os.getpid()}-0-other").touch()
        assert torch.get_num_threads() == 4
        assert running_cpu_jobs() == 1  # only the other one is left
        with cpu_job("cuda") as job:  # accelerators are not counted
            assert job.path is None
    finally:
        torch.set_num_threads(start)


def test_two_trainings_take_turns_and_never_overlap(tmp_path, monkeypatch):
    import itertools
    import threading
    import time

    from cainnflow.threads import cpu_job

    monkeypatch.setenv("CAINNFLOW_JOBS_DIR", str(tmp_path))
    inside, overlaps, order = [0], [0], []
    ready = threading.Barrier(2)

    def train(name: str) -> None:
        with cpu_job("cpu") as job:
            ready.wait()
            job.rebalance()
            for _ in range(20):
                with job.turn():
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                    order.append(name)
                    time.sleep(0.005)
                    inside[0] -= 1

    threads = [threading.Thread(target=train, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps[0] == 0 and sorted(order) == ["a"] * 20 + ["b"] * 20
    # Handed over after each turn: the two alternate rather than one finishing first.
    switches = sum(x != y for x, y in itertools.pairwise(order))
    assert switches >= 20, order
