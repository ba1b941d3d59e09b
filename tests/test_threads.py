"""Several trainings on one machine: every entry point sets OpenMP's passive wait policy before
torch loads (threads that spin while they wait take the cores from the other process), and a run
resumes only on the thread count it trained with."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_overrides

from cerebral import rundir
from cerebral.config import compose
from cerebral.errors import ConfigError
from cerebral.train import train

ENTRY_POINTS = [["-m", "cerebral.train"], ["scripts/reproduce.py"], ["scripts/bench.py"], ["scripts/fingerprint.py"],
                ["scripts/late_precision.py"]]


def openmp_spin_count(args, **env):
    """GOMP_SPINCOUNT as the OpenMP runtime read it when `python ARGS --help` loaded torch: libgomp
    prints its settings at load with OMP_DISPLAY_ENV=VERBOSE (0 means passive waiting)."""
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    result = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True,
                            env=environment | {"OMP_DISPLAY_ENV": "VERBOSE"})
    lines = [line.split("=", 1)[1].strip(" '") for line in result.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    return lines[0] if lines else None


@pytest.mark.parametrize("args", ENTRY_POINTS, ids=lambda args: args[-1])
def test_every_entry_point_waits_passively_unless_the_user_chose(args):
    if openmp_spin_count(["-c", "import torch"], OMP_WAIT_POLICY="ACTIVE") is None:
        pytest.skip("this torch's OpenMP runtime is not libgomp (no GOMP_SPINCOUNT to read)")
    assert openmp_spin_count(["-c", "import torch"]) != "0"  # torch alone spins a while: the default
    assert openmp_spin_count(args) == "0"
    assert openmp_spin_count(args, OMP_WAIT_POLICY="ACTIVE") != "0"


def test_run_json_records_the_thread_count_and_reads_older_records():
    assert rundir.recorded_threads({"device": "AMD EPYC, 2 threads", "threads": 3}) == 3
    assert rundir.recorded_threads({"device": "AMD EPYC, 2 threads"}) == 2  # before the field existed
    assert rundir.recorded_threads({"device": "AMD EPYC, 1 threads"}) == 1
    assert rundir.recorded_threads({"device": "AMD EPYC, 1 thread"}) == 1
    assert rundir.recorded_threads({"device": "NVIDIA H100 80GB HBM3"}) is None


def test_a_run_resumed_on_another_thread_count_is_refused_in_one_line(data_dir, tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(data_dir, run, "train.epochs=1")
    train(compose(*overrides))
    record = rundir.read_record(run)
    assert record["sessions"][-1]["threads"] == torch.get_num_threads()
    other = torch.get_num_threads() + 1
    record["sessions"][-1]["threads"] = other
    (run / rundir.RECORD).write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".train.lock"}
    with pytest.raises(ConfigError, match=f"trained its last session on {other} CPU threads and this process has "
                                          f"{torch.get_num_threads()}.*OMP_NUM_THREADS={other}"):
        train(compose(*tiny_overrides(data_dir, run, "train.epochs=2")))
    del record["sessions"][-1]["threads"]  # an older record: its device line says the count
    record["sessions"][-1]["device"] = f"Some CPU, {other} threads"
    (run / rundir.RECORD).write_text(json.dumps(record))
    result = subprocess.run([sys.executable, "-m", "cerebral.train", *tiny_overrides(data_dir, run, "train.epochs=2")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {run} trained its last session on {other} CPU threads")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name not in (".train.lock", rundir.RECORD)} == \
        {k: v for k, v in before.items() if k != rundir.RECORD}
    record["sessions"][-1]["threads"] = torch.get_num_threads()  # the same count: it resumes
    (run / rundir.RECORD).write_text(json.dumps(record))
    assert len(train(compose(*tiny_overrides(data_dir, run, "train.epochs=2")))) == 2
