"""`scripts/bench.py --profile`: where a training step's time goes, by part, kept beside the rest
of an existing benchmark result."""

import json

from conftest import load_script

bench = load_script("bench")


def test_ops_are_sorted_into_the_parts_of_a_step():
    class Event:
        def __init__(self, name, parent=None):
            self.name, self.cpu_parent = name, parent

    optimizer = Event("Optimizer.step#Adagrad.step")
    assert bench.part_of(Event("aten::addmm")) == "GEMM"
    assert bench.part_of(Event("aten::mkldnn_rnn_layer")) == "GEMM"  # oneDNN's whole LSTM layer
    assert bench.part_of(Event("aten::sqrt", Event("aten::_foreach_sqrt", optimizer))) == "optimizer"
    assert bench.part_of(Event("aten::sigmoid_")) == "elementwise"
    assert bench.part_of(Event("cerebral::gates_forward")) == "elementwise"
    assert bench.part_of(Event("cerebral::layer_backward")) == "elementwise"  # its GEMMs are events of their own
    assert bench.part_of(Event("aten::_to_copy")) == "casts and copies"
    assert bench.part_of(Event("aten::empty_strided")) == "allocation"
    assert bench.part_of(Event("aten::slice")) == "views and dispatch"
    assert bench.part_of(Event("aten::_log_softmax")) == "embedding, head softmax and loss"
    assert bench.part_of(Event("FusedLayerBackward")) == "autograd and Python"


def test_the_profile_covers_each_fused_core_and_precision_and_keeps_the_rest(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"paper_shapes": {"kept": 1}}))
    bench.main(["--profile", "--size", "16", "--batch", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["paper_shapes"] == {"kept": 1}
    rows = result["profile"]["rows"]
    assert set(rows) == {f"{m} {p}" for m in ("stacked_lstm", "cerebral_lstm", "stacked_lstm seq", "cerebral_lstm seq",
                                              "nn.LSTM x2") for p in ("fp32", "bf16")}
    for row in rows.values():
        assert set(row["parts_ms"]) == set(bench.PARTS) and sum(row["parts_ms"].values()) >= row["ms_per_step"] > 0
    assert rows["cerebral_lstm fp32"]["parts_ms"]["GEMM"] > 0 and rows["cerebral_lstm fp32"]["parts_ms"]["optimizer"] > 0
    assert "Where a training step's time goes" in capsys.readouterr().out
