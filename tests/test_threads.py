"""Thread settings for shared machines: OpenMP's wait policy before torch, fair thread shares."""

import os
import subprocess
import sys

import pytest

from cainnflow.threads import OPENMP_DEFAULTS, configure_openmp, fair_threads


@pytest.mark.parametrize("jobs, cores, expected", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (0, 4, 4)])
def test_fair_threads_divide_the_cores(jobs, cores, expected):
    assert fair_threads(jobs, cores) == expected


def test_importing_cainnflow_sets_passive_openmp_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_DEFAULTS}
    code = "import os, cainnflow, sys; import torch; print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "0"]


def test_a_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
