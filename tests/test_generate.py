import json
import math
import shutil
from collections import Counter

import pytest

from cerebral import rundir
from cerebral.generate import generate_for_run, load_trained, main, sample


def test_sampling_returns_the_requested_length_from_the_vocabulary(tiny_runs):
    model, vocab = load_trained(tiny_runs / "cerebral_lstm" / "seed0")
    text = sample(model, vocab, "Moe_Szyslak:", 50, temperature=0.8, seed=3)
    assert len(text) == 50 and set(text) <= set(vocab)
    assert text == sample(model, vocab, "Moe_Szyslak:", 50, temperature=0.8, seed=3)
    assert sample(model, vocab, "Moe_Szyslak:", 0) == ""


def entropy_bits(text):
    """The empirical entropy of the characters of `text`, in bits."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def test_a_lower_temperature_draws_a_lower_entropy_text_from_the_same_weights(tiny_runs):
    model, vocab = load_trained(tiny_runs / "cerebral_lstm" / "seed0")
    cold, warm, hot = (entropy_bits(sample(model, vocab, "Moe", 600, temperature=t, seed=1)) for t in (0.3, 1.0, 3.0))
    assert cold < warm < hot


def test_bad_prime_and_settings_are_refused(tiny_runs):
    model, vocab = load_trained(tiny_runs / "single_lstm" / "seed0")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        sample(model, vocab, "Moe\u2603", 5)
    for temperature in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            sample(model, vocab, "Moe", 5, temperature=temperature)
    with pytest.raises(ValueError, match="length"):
        sample(model, vocab, "Moe", -1)
    with pytest.raises(ValueError, match=r"seed must lie in \[-2\*\*63, 2\*\*64\), got 99999999999999999999"):
        sample(model, vocab, "Moe", 5, seed=99999999999999999999)


def test_save_writes_the_sample_with_its_settings(tiny_runs, capsys):
    run = tiny_runs / "stacked_lstm" / "seed0"
    text = generate_for_run(run, save=True, length=20, seed=1)
    saved = json.loads((run / "sample.json").read_text())
    assert saved["text"] == text and text.startswith("Moe_Szyslak:") and len(text) == len("Moe_Szyslak:") + 20
    assert (saved["length"], saved["seed"], saved["temperature"]) == (20, 1, 1.0)
    main([str(run), "--length", "20", "--seed", "1"])
    assert capsys.readouterr().out.strip() == text


def test_a_run_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match=r"does not exist, nor committed weights \(model.pt\): train the run first"):
        main([str(tmp_path)])


def test_sampling_from_a_run_with_an_unreadable_checkpoint_moves_no_file(tiny_runs, tmp_path, capsys):
    run = shutil.copytree(tiny_runs / "cerebral_lstm" / "seed0", tmp_path / "run")
    (run / rundir.CHECKPOINT).write_bytes((run / rundir.CHECKPOINT).read_bytes()[:1000])  # a copy cut short
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    main([str(run), "--length", "5"])
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {run / rundir.CHECKPOINT} cannot be read as a checkpoint")
    assert "sampling from checkpoint.prev.pt (after epoch 1)" in err and "resuming" not in err and "delete" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no checkpoint.unreadable.pt
