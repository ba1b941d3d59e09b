"""`make gpu-check`: its CPU form end to end at tiny size, and its one-line refusals."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, load_script
from omegaconf import OmegaConf


def gpu_check_module():
    return load_script("gpu_check")


def test_the_cpu_form_runs_every_step_end_to_end(data_dir, tmp_path):
    result = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--tiny",
                             "--data", str(data_dir), "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tests"]["returncode"] == 0 and summary["tests"]["result"].startswith("18 passed")
    rows = summary["bench"]["ms_per_step"]
    assert {"cerebral_lstm", "cerebral_lstm bf16", "cerebral_lstm lstm", "cerebral_lstm lstm bf16", "nn.LSTM x2",
            "nn.LSTM x2 bf16"} <= set(rows)  # Cerebral on both backends, against two-layer nn.LSTM
    assert {"cerebral_lstm_backend_vs_lstm2", "cerebral_lstm_backend_bf16_vs_lstm2_bf16"} <= set(summary["bench"]["ratios"])
    assert [(r["model"], r["precision"]) for r in summary["epochs"]] == [
        (m, p) for p in ("fp32", "bf16") for m in ("single_lstm", "stacked_lstm", "cerebral_lstm")]
    assert all(len(r["losses"]) == 2 for r in summary["epochs"])
    assert "| cerebral_lstm | bf16 |" in (tmp_path / "summary.md").read_text()


def test_without_cuda_it_says_so_in_one_line(data_dir, tmp_path):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    result = subprocess.run([sys.executable, "scripts/gpu_check.py", "--data", str(data_dir), "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "no CUDA device" in result.stderr


def test_a_missing_package_is_named_in_one_line(monkeypatch, capsys, tmp_path):
    module = gpu_check_module()
    assert module.missing_modules(("json", "no_such_module_xyz")) == ["no_such_module_xyz"]
    monkeypatch.setattr(module, "NEEDED", ("torch", "no_such_module_xyz"))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--data", "data", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    message = str(exit_info.value)
    assert "lacks no_such_module_xyz" in message and "installs nothing" in message and "\n" not in message


def test_missing_data_or_an_output_under_a_file_is_one_line_before_the_first_step(data_dir, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("")
    for data, out, problem in ((tmp_path / "nodata", tmp_path / "out", str(tmp_path / "nodata")),
                               (data_dir, taken / "out", f"cannot make the output folder {taken / 'out'}")):
        monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--tiny", "--data", str(data),
                                          "--out", str(out)])
        with pytest.raises(SystemExit) as exit_info:
            gpu_check_module().main()
        message = str(exit_info.value)
        assert message.startswith("error: ") and problem in message and "\n" not in message
    assert not (tmp_path / "out").exists() and taken.read_text() == ""


def test_a_run_folder_of_an_earlier_check_at_other_sizes_is_refused_before_the_first_step(data_dir, tmp_path, monkeypatch):
    """The last step trains into --out/runs/: a folder left there by a --tiny check would refuse the
    real one after minutes of tests and benchmark, so every folder is checked first."""
    module = gpu_check_module()
    tiny = module.epoch_configs(argparse.Namespace(tiny=True, data=data_dir, out=tmp_path, device="cpu"))[0]
    Path(tiny.out_dir).mkdir(parents=True)
    OmegaConf.save(tiny, Path(tiny.out_dir) / "config.yaml")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--data", str(data_dir), "--out", str(tmp_path)])
    monkeypatch.setattr(module, "run_tests", lambda *a: pytest.fail("the tests ran before the run folders were checked"))
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    message = str(exit_info.value)
    assert message.startswith(f"error: {tiny.out_dir} holds a run with another configuration") and "state_size" in message
