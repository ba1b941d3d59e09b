"""train.precision=bf16: every core within a stated tolerance of fp32 (and not equal to it, so
bf16 really ran), fp32 logits and loss, bit-exact resume, and the run folder's guard."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_script, tiny_overrides
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from cerebral import precision
from cerebral.config import ConfigError, compose
from cerebral.cores import CerebralLSTM, CerebralLSTMPrinted, NovoLSTM, PostBiasLSTM
from cerebral.fused import FusedLayer
from cerebral.losslog import read_losses
from cerebral.models import build_model
from cerebral.report import fidelity, fidelity_table
from cerebral.tasks import char_lm_loss, decide_kernels
from cerebral.train import train

# Largest |bf16 - fp32|, relative to the largest |fp32|, over a 2-layer core at T=20, B=16. One
# bf16 rounding is 2^-9 = 0.002 relative. The fused cores keep gradients in fp32 between their
# bf16 GEMMs; through autograd (the equation path, nn.LSTM), autocast rounds the gradient of
# every product to bf16 as well, so those gradients drift further.
OUTPUT_TOLERANCE = 0.01
FUSED_GRADIENT_TOLERANCE = 0.01
AUTOGRAD_GRADIENT_TOLERANCE = 0.08

CORES = {  # name -> (make, fused path, gradient tolerance)
    "cerebral fused": (lambda: CerebralLSTM(24, 32, 2, bias=True), True, FUSED_GRADIENT_TOLERANCE),
    "cerebral equations": (lambda: CerebralLSTM(24, 32, 2, bias=True), False, AUTOGRAD_GRADIENT_TOLERANCE),
    "post-bias fused": (lambda: PostBiasLSTM(24, 32, 2), True, FUSED_GRADIENT_TOLERANCE),
    "post-bias equations": (lambda: PostBiasLSTM(24, 32, 2), False, AUTOGRAD_GRADIENT_TOLERANCE),
    "printed cerebral": (lambda: CerebralLSTMPrinted(24, 32, 2), False, AUTOGRAD_GRADIENT_TOLERANCE),
    "novo": (lambda: NovoLSTM(24, 32, 2), False, AUTOGRAD_GRADIENT_TOLERANCE),
    "nn.LSTM": (lambda: nn.LSTM(24, 32, 2), None, AUTOGRAD_GRADIENT_TOLERANCE),
}


def outputs_and_gradients(core, x, mode):
    core.zero_grad()
    x.grad = None
    with precision.autocast(mode, "cpu"):
        with precision.native_lstm_context(core, x):  # as the models call their core
            output, _ = core(x)
    output = output.float()
    (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    return output.detach(), [p.grad.clone() for p in core.parameters()] + [x.grad.clone()]


def relative_error(ours, reference):
    return ((ours - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("name", CORES)
def test_bf16_stays_within_tolerance_of_fp32_and_is_not_fp32(name):
    make, fused, gradient_tolerance = CORES[name]
    torch.manual_seed(0)
    core = make()
    if fused is not None:
        core.fused = fused
    with torch.no_grad():  # non-zero biases everywhere, so that their gradients count too
        for p_name, p in core.named_parameters():
            if "bias" in p_name:
                p.uniform_(-0.3, 0.3)
    x = torch.randn(20, 16, 24, requires_grad=True)
    out32, grads32 = outputs_and_gradients(core, x, "fp32")
    out16, grads16 = outputs_and_gradients(core, x, "bf16")
    assert out16.dtype == torch.float32
    assert relative_error(out16, out32) < OUTPUT_TOLERANCE
    assert not torch.equal(out16, out32)  # bf16 really ran
    for g16, g32 in zip(grads16, grads32, strict=True):
        assert g16.dtype == g32.dtype == torch.float32
        assert relative_error(g16, g32) < gradient_tolerance
        assert not torch.equal(g16, g32)


@pytest.mark.parametrize("core_class", [CerebralLSTM, PostBiasLSTM])
def test_fused_bf16_agrees_with_the_equation_path_in_bf16(core_class):
    torch.manual_seed(1)
    core = core_class(24, 32, 2)
    x = torch.randn(20, 16, 24, requires_grad=True)
    core.fused = True
    fused_out, fused_grads = outputs_and_gradients(core, x, "bf16")
    core.fused = False
    eq_out, eq_grads = outputs_and_gradients(core, x, "bf16")
    # The same products, but the equation path's F.linear rounds its bias with them
    assert relative_error(fused_out, eq_out) < OUTPUT_TOLERANCE
    for ours, theirs in zip(fused_grads, eq_grads, strict=True):
        assert relative_error(ours, theirs) < AUTOGRAD_GRADIENT_TOLERANCE


@pytest.mark.parametrize("mode", ["bidirectional", "packed", "projected", "packed bidirectional projected"])
@pytest.mark.parametrize("core_class", [CerebralLSTM, PostBiasLSTM])
def test_the_fused_path_runs_every_mode_in_bf16_within_tolerance_of_fp32(core_class, mode, monkeypatch):
    calls = []  # (gemm dtype) of each FusedLayer call: no silent fallback to the equation path
    apply = FusedLayer.apply
    monkeypatch.setattr(FusedLayer, "apply", lambda *args: calls.append(args[10]) or apply(*args))  # gemm_dtype
    torch.manual_seed(2)
    core = core_class(24, 32, 2, bidirectional="bidirectional" in mode, proj_size=16 if "projected" in mode else 0)
    x = torch.randn(20, 16, 24, requires_grad=True)
    lengths = torch.randint(1, 21, (16,))
    run = (lambda x: core(pack_padded_sequence(x, lengths, enforce_sorted=False))) if "packed" in mode else core

    def outputs_and_gradients(precision_mode, fused=True):
        core.fused = fused
        core.zero_grad()
        x.grad = None
        with precision.autocast(precision_mode, "cpu"):
            output, (h, _) = run(x)
        output = output.data if "packed" in mode else output
        (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
        return [output.detach(), h.detach()], [p.grad.clone() for p in core.parameters()] + [x.grad.clone()]

    out32, grads32 = outputs_and_gradients("fp32")
    assert calls == [None] * 2 * core.num_directions
    out16, grads16 = outputs_and_gradients("bf16")
    assert calls[2 * core.num_directions:] == [torch.bfloat16] * 2 * core.num_directions
    for o16, o32 in zip(out16, out32, strict=True):
        assert o16.dtype == torch.float32 and relative_error(o16, o32) < OUTPUT_TOLERANCE and not torch.equal(o16, o32)
    # A gradient summed over many rows with cancellation (a deep reverse layer's b_h) can drift
    # further; it must then drift no more than the same products through autograd do.
    _, equation_grads16 = outputs_and_gradients("bf16", fused=False)
    for g16, g32, eq16 in zip(grads16, grads32, equation_grads16, strict=True):
        assert g16.dtype == torch.float32
        assert relative_error(g16, g32) < max(FUSED_GRADIENT_TOLERANCE, 1.1 * relative_error(eq16, g32))


@pytest.mark.parametrize("model", ["single_lstm", "stacked_lstm", "cerebral_lstm", "novo_lstm"])
def test_bf16_logits_and_loss_are_fp32(model):
    torch.manual_seed(0)
    net = build_model(compose(f"model={model}", "model.state_size=16").model, 11)
    tokens = torch.randint(0, 11, (4, 6))
    with precision.autocast("bf16", "cpu"):
        logits, _ = net(tokens)
        loss = char_lm_loss(net, tokens, tokens)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    with precision.autocast("fp32", "cpu"):
        logits32, _ = net(tokens)
    assert relative_error(logits, logits32) < OUTPUT_TOLERANCE and not torch.equal(logits, logits32)


def test_a_bf16_run_resumes_bit_for_bit_and_records_its_precision(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 2.0)
    def bf16(run, *extra):
        return compose(*tiny_overrides(data_dir, tmp_path / run, "train.precision=bf16", *extra))
    straight = train(bf16("a", "train.epochs=4"))
    train(bf16("b", "train.epochs=2"))
    extended = train(bf16("b", "train.epochs=4"))
    assert extended == straight
    assert (tmp_path / "a" / "loss.txt").read_bytes() == (tmp_path / "b" / "loss.txt").read_bytes()
    fp32 = train(compose(*tiny_overrides(data_dir, tmp_path / "c", "train.epochs=4")))
    assert fp32 != straight and max(abs(a - b) for a, b in zip(fp32, straight, strict=True)) < 0.01
    sessions = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"]
    assert [s["precision"] for s in sessions] == ["bf16", "bf16"]


def test_a_run_folder_refuses_another_precision(data_dir, tmp_path):
    train(compose(*tiny_overrides(data_dir, tmp_path / "run")))
    with pytest.raises(ConfigError, match="train.precision: 'fp32' -> 'bf16'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.precision=bf16", "train.epochs=3")))


def test_an_unknown_precision_is_refused_before_any_work(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="train.precision must be fp32 or bf16, got 'fp16'"):
        train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.precision=fp16")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("speedup,warned", [(0.6, True), (2.0, False)])
def test_bf16_on_a_cpu_where_it_is_slower_warns_in_one_line_then_trains(speedup, warned, data_dir, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setattr(precision, "bf16_speedup", lambda: speedup)
    train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.precision=bf16", "train.epochs=1")))
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == int(warned)
    if warned:
        assert "1.7x slower" in warnings[0] and out.index("warning:") < out.index("charlm cerebral_lstm")
    assert (tmp_path / "run" / "loss.txt").exists()


def test_no_warning_for_fp32_or_off_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 0.5)
    assert precision.speed_warning("fp32", "cpu") is None
    assert precision.speed_warning("bf16", "cuda") is None
    assert precision.speed_warning("bf16", "cpu").startswith("warning: train.precision=bf16")


@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_the_reproduce_plan_times_the_chosen_precision(mode, data_dir, tmp_path, monkeypatch):
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "--plan-only", f"data.dir={data_dir}", f"runs_dir={tmp_path}",
         "model.state_size=16", "train.batch_size=8", f"train.precision={mode}", "device=cpu"],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    plan = next(line for line in result.stdout.splitlines() if line.startswith("Plan on"))
    assert plan.endswith(f", {mode} (step times measured now):")
    reproduce = load_script("reproduce")
    timed = []
    monkeypatch.setattr(reproduce, "timed_train_step", lambda *args, precision: timed.append(precision) or 1.0)
    cfg = compose("model.state_size=8", f"train.precision={mode}", "device=cpu")
    decide_kernels(cfg)  # as reproduce does once the data are read
    reproduce.seconds_per_step(cfg, 5, 4)
    assert timed and set(timed) == {mode}


@pytest.mark.parametrize("shift,passes", [(0.009, True), (0.011, False)])
def test_fidelity_bounds_the_mean_difference(shift, passes):
    reference = [4.0 - 0.02 * i for i in range(50)]
    rows = fidelity({"single_lstm": [v + shift for v in reference]}, {"single_lstm": reference}, {})
    assert rows["single_lstm"]["mean_abs_diff"] == pytest.approx(shift)
    assert rows["single_lstm"]["passes"] is passes


@pytest.mark.parametrize("shift,passes", [(0.0009, True), (0.0011, False)])
def test_a_given_bound_replaces_every_models_own(shift, passes):
    reference = [4.0 - 0.03 * i for i in range(50)]  # below 3.0 from epoch 34, with or without the shift
    rows = fidelity({m: [v + shift for v in reference] for m in ("cerebral_lstm", "stacked_lstm")},
                    {m: reference for m in ("cerebral_lstm", "stacked_lstm")}, {}, bound=1e-3)
    assert [row["passes"] for row in rows.values()] == [passes, passes]
    assert "(0.001)" in fidelity_table(rows, "seq", "aten")


def test_the_fidelity_table_prints_a_tiny_difference_in_scientific_notation_not_as_zero():
    reference = [4.0 - 0.02 * i for i in range(50)]
    table = fidelity_table(fidelity({"single_lstm": [v + 2e-8 for v in reference]}, {"single_lstm": reference}, {}),
                           "seq", "aten")
    assert "| 2.0e-08 (0.01) | 2.0e-08 (" in table and "0.0000" not in table
    table = fidelity_table(fidelity({"single_lstm": [v + 0.004 for v in reference]}, {"single_lstm": reference}, {}),
                           "seq", "aten")
    assert "| 0.0040 (0.01) | 0.0040 (" in table


@pytest.mark.parametrize("delay,passes", [(3, True), (4, False)])
def test_fidelity_of_the_two_stacked_model_bounds_when_it_leaves_the_plateau(delay, passes):
    reference = [3.001] * 20 + [2.999] * 30  # first at or below 3.0: epoch 20
    ours = [3.001] * (20 + delay) + [2.999] * (30 - delay)
    rows = fidelity({"stacked_lstm": ours}, {"stacked_lstm": reference}, {})
    assert (rows["stacked_lstm"]["first_at_3"], rows["stacked_lstm"]["reference_first_at_3"]) == (20 + delay, 20)
    assert rows["stacked_lstm"]["mean_abs_diff"] < 0.001  # only the epoch criterion decides
    assert rows["stacked_lstm"]["passes"] is passes


@pytest.mark.parametrize("moved,passes", [(0.009, True), (0.011, False)])
def test_fidelity_bounds_the_change_in_distance_to_the_published_curve(moved, passes):
    published = [4.0] * 50
    reference = [4.0] * 50
    ours = [4.0 + moved] * 50
    rows = fidelity({"cerebral_lstm": ours}, {"cerebral_lstm": reference}, {"cerebral_lstm": published})
    assert rows["cerebral_lstm"]["distance_to_published"] == pytest.approx(moved)
    assert rows["cerebral_lstm"]["passes"] is passes


def late_precision_module():
    return load_script("late_precision")


def test_late_training_continues_one_state_in_each_precision_and_evaluates_fixed_batches(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "bf16_speedup", lambda: 2.0)
    late = late_precision_module()
    straight = train(compose(*tiny_overrides(data_dir, tmp_path / "straight", "train.epochs=3")))
    train(compose(*tiny_overrides(data_dir, tmp_path / "source", "train.epochs=2")))
    late.main(["continue", str(tmp_path / "source"), "--epochs", "1", "--out", str(tmp_path / "late")])
    fp32 = (tmp_path / "late" / "fp32" / "loss.txt").read_text()
    assert fp32 == (tmp_path / "straight" / "loss.txt").read_text()  # the same state, the same batches
    bf16 = read_losses(tmp_path / "late" / "bf16" / "loss.txt")
    assert bf16[:2] == straight[:2] and bf16[2] != straight[2] and abs(bf16[2] - straight[2]) < 0.01
    machine = f"on {late.device_name(torch.device('cpu'))} ({late.cpu_features()}) at commit "
    assert "| 2 |" in (tmp_path / "late" / "LATE.md").read_text()
    assert f"Trained from epoch 2 of {tmp_path / 'source'} {machine}" in (tmp_path / "late" / "LATE.md").read_text()
    a, b = (late.fixed_batch_loss(tmp_path / "straight", mode) for mode in ("fp32", "bf16"))
    assert a != b and abs(a - b) < 0.01
    late.main(["evaluate", str(tmp_path / "straight"), "--out", str(tmp_path / "late")])
    evaluated = (tmp_path / "late" / "EVALUATE.md").read_text()
    assert f"{a:.5f} | {b:.5f} | {b - a:+.1e} |" in evaluated  # its size shown, however small
    assert f"Evaluated {machine}" in evaluated


def test_fidelity_gives_no_verdict_before_50_epochs_and_skips_curves_without_common_epochs():
    reference = [4.0 - 0.02 * i for i in range(49)]
    rows = fidelity({"single_lstm": reference, "cerebral_lstm": []}, {"single_lstm": reference, "cerebral_lstm": [4.0]},
                    {})
    assert rows["single_lstm"]["passes"] is None and "cerebral_lstm" not in rows
    assert "not yet (50 epochs needed)" in fidelity_table(rows, "bf16", "fp32")


def test_autocast_leaves_float64_cores_alone():
    torch.manual_seed(0)
    core = CerebralLSTM(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with precision.autocast("bf16", "cpu"):
        inside, _ = core(x)
    assert torch.equal(inside, core(x)[0])


def test_the_fingerprint_script_names_missing_data_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fingerprint.py")],
                            capture_output=True, text=True, cwd=tmp_path)  # no data/ here
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: data/data.txt is missing") and result.stderr.count("\n") == 1


def test_the_fidelity_script_writes_its_table_and_both_sides_records_where_out_says(tiny_runs, data_dir, tmp_path):
    script = load_script("fidelity")
    reference = tmp_path / "reference"  # the same runs, recorded as trained on another machine
    shutil.copytree(tiny_runs, reference)
    for record_file in reference.glob("*/seed0/run.json"):
        record = json.loads(record_file.read_text())
        record["sessions"][-1].update(device="another CPU, 2 threads", cpu="cpu family 99, model 9; avx512_bf16")
        record_file.write_text(json.dumps(record))
    out = tmp_path / "against-fp32.md"
    script.main(["--runs", str(tiny_runs), "--reference", str(reference), "--data", str(data_dir), "--out", str(out),
                 "--name", "ours", "--reference-name", "theirs"])
    text = out.read_text()
    assert f"--out {out} --name ours --reference-name theirs`" in text
    for model in ("single_lstm", "stacked_lstm", "cerebral_lstm"):  # each against itself: no difference
        assert f"| {model} | 3 | 0.0000 " in text
    # Each side's runs with the device, precision, seed and commit that produced them.
    session = json.loads((tiny_runs / "cerebral_lstm" / "seed0" / "run.json").read_text())["sessions"][-1]
    theirs = "another CPU, 2 threads (cpu family 99, model 9; avx512_bf16)"
    for side, folder, device in (("ours", tiny_runs, f"{session['device']} ({session['cpu']})"), ("theirs", reference, theirs)):
        record = f"| 0 | 3 | {device} | fp32 | {session['torch']} | {(session['git_commit'] or '-')[:12]} |"
        rows = text.split(f"\n{side} ({folder}):\n\n", 1)[1].split("\n\n")[0].splitlines()[2:]
        assert [row.split(" | ")[0] for row in rows] == ["| single_lstm", "| stacked_lstm", "| cerebral_lstm"]
        assert all(record in row for row in rows)
    assert not (tiny_runs / "FIDELITY.md").exists()


def test_the_fidelity_script_records_only_the_runs_it_compares(tiny_runs, data_dir, tmp_path):
    """A reference folder with more models than the runs (e.g. one bf16 run against results/paper)."""
    one_model = tmp_path / "one-model"
    shutil.copytree(tiny_runs / "stacked_lstm", one_model / "stacked_lstm")
    out = tmp_path / "FIDELITY.md"
    load_script("fidelity").main(["--runs", str(one_model), "--reference", str(tiny_runs), "--data", str(data_dir),
                                  "--out", str(out)])
    text = out.read_text()
    table, records = text.split("The runs (each one's last training session):", 1)
    assert "| stacked_lstm | 3 | 0.0000 " in table
    assert [line.split(" | ")[0] for line in records.splitlines() if line.startswith("| ") and "_lstm" in line] == \
        ["| stacked_lstm", "| stacked_lstm"]


@pytest.mark.parametrize("onednn_bf16", [True, False])
def test_the_single_lstm_trains_in_bf16_whether_or_not_onednn_has_bf16_kernels(onednn_bf16, monkeypatch):
    """Without them (a CPU without AVX-512) oneDNN's LSTM refuses bf16; PyTorch's own runs it."""
    if onednn_bf16 and not precision.onednn_has_bf16():
        pytest.skip("this CPU's oneDNN has no bf16 kernels")
    monkeypatch.setattr(precision, "onednn_has_bf16", lambda: onednn_bf16)
    torch.manual_seed(0)
    model = build_model(compose("model=single_lstm", "model.state_size=32").model, 11)
    tokens = torch.randint(0, 11, (4, 9))
    reference = char_lm_loss(model, tokens, tokens)
    onednn_during_call = []
    model.core.register_forward_pre_hook(lambda *_: onednn_during_call.append(torch.backends.mkldnn.enabled))
    with precision.autocast("bf16", "cpu"):
        loss = char_lm_loss(model, tokens, tokens)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() != reference.item()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
    assert onednn_during_call == [onednn_bf16]
    assert torch.backends.mkldnn.enabled  # switched off for the call only
