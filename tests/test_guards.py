"""The safeguards on what the code reads: every pinned file, the published curves included, is
refused when corrupt through every path that brings it in (a mirror, a download from a file://
or a loopback http:// address, and loading a fetched folder); metadata.pkl is unpickled without
calling anything; loss files hold nothing but their numbers."""

import pickle
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from cerebral import data as chardata
from cerebral.curves import published_curves
from cerebral.losslog import LossFileError, parse_losses

PINNED = list(chardata.FILES)  # upstream paths: the four data files and the three published curves
LOSS_FILES = [p for p in PINNED if p.startswith("loss_values/")]


def corrupt(path):
    """Flip one byte in the middle of `path`: the same size, a different SHA-256."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".")) if folder.exists() else []


# --- corrupt pinned files -----------------------------------------------------------------------

@pytest.mark.parametrize("source", ["mirror", "file_url", "http_url"])
@pytest.mark.parametrize("upstream_path", PINNED)
def test_a_corrupt_pinned_file_is_refused_from_every_source(upstream_path, source, upstream_layout, tmp_path,
                                                             monkeypatch, serve):
    monkeypatch.delenv("CEREBRAL_DATA_MIRROR", raising=False)
    corrupt(upstream_layout / upstream_path)
    if source == "mirror":
        monkeypatch.setenv("CEREBRAL_DATA_MIRROR", str(upstream_layout))
    else:  # a download, its address from CEREBRAL_DATA_URL
        url = upstream_layout.as_uri() if source == "file_url" else serve(upstream_layout)
        monkeypatch.setenv("CEREBRAL_DATA_URL", url)
    target = tmp_path / "data"
    local, expected = chardata.FILES[upstream_path]
    with pytest.raises(chardata.DataError, match="is not the pinned file") as error:
        chardata.fetch(target, log=lambda message: None)
    assert upstream_path in str(error.value) and expected in str(error.value)
    assert not (target / local).exists()
    assert leftovers(target) == []
    for other, (other_local, other_expected) in chardata.FILES.items():  # what did arrive is the pinned file
        if (target / other_local).exists():
            assert chardata.sha256(target / other_local) == other_expected, other


def load_everything(folder):
    """Every loader of a fetched folder: the character data and the published curves."""
    chardata.load(folder)
    published_curves(folder)


@pytest.mark.parametrize("upstream_path", PINNED)
def test_a_corrupt_file_in_a_fetched_folder_is_refused_on_load(upstream_path, upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, mirror=upstream_layout, log=lambda message: None)
    load_everything(target)  # the clean folder loads
    local = chardata.FILES[upstream_path][0]
    corrupt(target / local)
    with pytest.raises(chardata.DataError, match=rf"{local} is corrupt: SHA-256 expected {chardata.FILES[upstream_path][1]}"):
        load_everything(target)


@pytest.mark.parametrize("upstream_path", LOSS_FILES)
def test_a_corrupt_published_curve_is_refused_when_read_on_its_own(upstream_path, upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, mirror=upstream_layout, log=lambda message: None)
    local = chardata.FILES[upstream_path][0]
    # one digit changed: the file still parses as a loss file, only the digest can tell
    text = (target / local).read_text()
    (target / local).write_text(text.replace("loss : 3", "loss : 4", 1))
    with pytest.raises(chardata.DataError, match="is corrupt"):
        published_curves(target)
    with pytest.raises(chardata.DataError, match="is corrupt"):
        chardata.verified_path(target, upstream_path)


def test_the_comparison_script_refuses_a_corrupt_published_curve(upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, mirror=upstream_layout, log=lambda message: None)
    corrupt(target / "loss_values" / "proposed_model.txt")
    done = subprocess.run([sys.executable, "scripts/compare.py", "--runs", str(tmp_path / "none"), "--data", str(target)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "proposed_model.txt is corrupt" in done.stderr


# --- metadata.pkl: nothing is called while unpickling ---------------------------------------------

def payloads(marker):
    """Pickles that would create `marker` when unpickled by `pickle.loads`, by name of what they call.
    Written opcode by opcode: GLOBAL (protocol 0) and STACK_GLOBAL (protocol 4) both look names up."""
    m = str(marker)
    py = f"__import__('pathlib').Path({m!r}).touch()"
    def g(module, name):
        return f"c{module}\n{name}\n".encode()  # GLOBAL
    def s(text):
        return f"V{text}\n".encode()                     # UNICODE string
    def stack_global(module, name):
        return (b"\x8c" + bytes([len(module)]) + module.encode()
                                             + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93")
    return {
        "builtins.eval": g("builtins", "eval") + b"(" + s(py) + b"tR.",
        "builtins.exec": g("builtins", "exec") + b"(" + s(py) + b"tR.",
        "builtins.eval, protocol 4": b"\x80\x04" + stack_global("builtins", "eval") + b"(" + s(py) + b"tR.",
        # getattr(__import__('os'), 'system')('touch MARKER')
        "builtins.getattr": (g("builtins", "getattr") + b"(" + g("builtins", "__import__") + b"(" + s("os")
                             + b"tR" + s("system") + b"tR(" + s(f"touch {m}") + b"tR."),
        "subprocess.Popen": g("subprocess", "Popen") + b"((" + s("touch") + s(m) + b"ltR.",
        "os.system": g("os", "system") + b"(" + s(f"touch {m}") + b"tR.",
        "posix.system, protocol 4": b"\x80\x04" + stack_global("posix", "system") + b"(" + s(f"touch {m}") + b"tR.",
    }


def wait_for(path, seconds=5.0):
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.01)
    return path.exists()


@pytest.mark.parametrize("name", list(payloads("x")))
def test_the_payloads_run_code_under_plain_pickle(name, tmp_path):
    """The crafted pickles below are real: plain `pickle.loads` creates the marker file."""
    marker = tmp_path / "pwned"
    result = pickle.loads(payloads(marker)[name])
    if hasattr(result, "wait"):
        result.wait()
    assert wait_for(marker)


@pytest.mark.parametrize("name", list(payloads("x")))
def test_a_crafted_pickle_is_refused_with_no_side_effect(name, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "metadata.pkl"
    path.write_bytes(payloads(marker)[name])
    first_global = name.split(",")[0]
    with pytest.raises(chardata.DataError, match=rf"refusing to load {first_global}"):
        chardata.load_metadata(path)
    time.sleep(0.2)  # a Popen would touch the file a moment later
    assert not marker.exists()


def test_a_crafted_pickle_inside_plain_metadata_is_refused(tmp_path):
    """The payload nested in an otherwise valid vocabulary, as `pickle.dumps` writes it."""
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (eval, (f"__import__('pathlib').Path({str(marker)!r}).touch()",))

    path = tmp_path / "metadata.pkl"
    path.write_bytes(pickle.dumps({"ch2idx": {"a": 0}, "idx2ch": ["a"], "x": RunsCode()}))
    with pytest.raises(chardata.DataError, match="refusing to load builtins.eval"):
        chardata.load_metadata(path)
    assert not marker.exists()


def test_plain_metadata_still_loads(tmp_path):
    path = tmp_path / "metadata.pkl"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps({"ch2idx": {"a": 0, "b": 1}, "idx2ch": ["a", "b"]}, protocol=protocol))
        assert chardata.load_metadata(path) == {"ch2idx": {"a": 0, "b": 1}, "idx2ch": ["a", "b"]}


# --- loss files: the number and nothing else ---------------------------------------------------------

@pytest.mark.parametrize("line", [
    "[0] loss : 4.25 junk", "[0] loss : 4.25 3.5", "[0] loss : 4.25\tjunk", "[0] loss : 4.25 ",
    "[0] loss : 4.25 # note", "[0] loss : 4.25junk", "[0] loss : 4.25;", "x[0] loss : 4.25", "[0] loss : 4.25[1]",
])
def test_the_loss_parser_refuses_text_around_the_number(line):
    with pytest.raises(LossFileError, match="line 1"):
        parse_losses(line + "\n")
    with pytest.raises(LossFileError, match="line 2"):
        parse_losses("[0] loss : 4.5\n" + line.replace("[0]", "[1]") + "\n")


def test_the_loss_parser_still_takes_the_published_forms():
    assert parse_losses("[0] loss : 4.25\r\n[1] loss : 3.5e-01\n") == [4.25, 0.35]
    assert parse_losses("[0] loss : 4.25\n[1] loss : 3.5") == [4.25, 3.5]
