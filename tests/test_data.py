import os
import pickle
import socket

import pytest

from cerebral import data as chardata
from cerebral import taskdata


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".")]


def test_fetch_from_mirror_verifies_every_file_and_skips_verified_ones(upstream_layout, tmp_path):
    target = tmp_path / "data"
    fetched = []
    chardata.fetch(target, mirror=upstream_layout, log=fetched.append)
    assert len(fetched) == len(chardata.FILES)
    for local, expected in chardata.FILES.values():
        assert chardata.sha256(target / local) == expected
    # the mirror turns corrupt (one byte of a published curve): verified local files are kept ...
    curve = upstream_layout / "loss_values" / "proposed_model.txt"
    raw = bytearray(curve.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    curve.write_bytes(bytes(raw))
    fetched.clear()
    chardata.fetch(target, mirror=upstream_layout, log=fetched.append)
    assert fetched == []
    # ... and a file that has to come from it again is refused, leaving nothing in its place
    (target / "loss_values" / "proposed_model.txt").unlink()
    with pytest.raises(chardata.DataError, match="loss_values/proposed_model.txt from .* is not the pinned file"):
        chardata.fetch(target, mirror=upstream_layout, log=fetched.append)
    assert fetched == [] and not (target / "loss_values" / "proposed_model.txt").exists()
    assert leftovers(target) == []


def test_fetch_refetches_a_corrupt_local_file(upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, mirror=upstream_layout, log=lambda m: None)
    (target / "idx_x.npy").write_bytes(b"garbage")
    fetched = []
    chardata.fetch(target, mirror=upstream_layout, log=fetched.append)
    assert len(fetched) == 1 and "idx_x.npy" in fetched[0]
    chardata.load(target)


def test_fetch_over_http(serve, upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, base_url=serve(upstream_layout), log=lambda m: None)
    assert chardata.load(target).vocab_size == 89
    assert leftovers(target) == []


def test_base_url_comes_from_the_environment(serve, upstream_layout, tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBRAL_DATA_URL", serve(upstream_layout))
    chardata.fetch(tmp_path / "data", log=lambda m: None)
    assert chardata.load(tmp_path / "data").inputs.shape == (15259, 20)


def test_a_server_returning_a_wrong_file_is_refused_and_leaves_nothing(serve, upstream_layout, tmp_path):
    (upstream_layout / "data" / "metadata.pkl").write_bytes(b"not the pinned file")
    target = tmp_path / "data"
    with pytest.raises(chardata.DataError) as error:
        chardata.fetch(target, base_url=serve(upstream_layout), log=lambda m: None)
    message = str(error.value)
    expected = chardata.FILES["data/metadata.pkl"][1]
    actual = chardata.hashlib.sha256(b"not the pinned file").hexdigest()
    assert "data/metadata.pkl" in message and expected in message and actual in message
    assert not (target / "metadata.pkl").exists()
    assert leftovers(target) == []


def test_a_server_that_is_down_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CEREBRAL_DATA_MIRROR", raising=False)
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = tmp_path / "data"
    with pytest.raises(chardata.DataError, match=r"could not download data/data.txt .*CEREBRAL_DATA_MIRROR"):
        chardata.fetch(target, base_url=f"http://127.0.0.1:{port}", log=lambda m: None)
    assert not target.exists() or list(target.rglob("*")) == []


def test_a_url_without_a_scheme_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CEREBRAL_DATA_MIRROR", raising=False)
    with pytest.raises(chardata.DataError, match=r"could not download data/data.txt from example.com/files/.*unknown url"):
        chardata.fetch(tmp_path / "data", base_url="example.com/files", log=lambda m: None)


def test_a_data_folder_that_is_a_file_is_named(tmp_path):
    taken = tmp_path / "data"
    taken.write_text("kept")
    with pytest.raises(chardata.DataError, match=f"the data folder {taken} is a file"):
        chardata.fetch(taken, log=lambda m: None)
    assert taken.read_text() == "kept"
    with pytest.raises(chardata.DataError, match=f"the data folder {taken / 'sub'} cannot be made: {taken} is a file"):
        chardata.fetch(taken / "sub", log=lambda m: None)
    with pytest.raises(chardata.DataError, match=f"the data folder {taken / 'sub' / 'mnist'} cannot be made: {taken} is a file"):
        taskdata.fetch("mnist", taken / "sub", log=lambda m: None)


def test_a_data_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(chardata.Path, "mkdir", refuse)
    with pytest.raises(chardata.DataError, match=f"cannot make the data folder {tmp_path / 'data'} \\(Permission denied\\)"):
        chardata.fetch(tmp_path / "data", log=lambda m: None)


def test_a_mirror_without_the_file_names_it(upstream_layout, tmp_path):
    (upstream_layout / "loss_values" / "2stack_lstm.txt").unlink()
    with pytest.raises(chardata.DataError, match="loss_values/2stack_lstm.txt is missing from the mirror"):
        chardata.fetch(tmp_path / "data", mirror=upstream_layout, log=lambda m: None)


def test_load_refuses_missing_and_corrupt_files(upstream_layout, tmp_path):
    target = tmp_path / "data"
    chardata.fetch(target, mirror=upstream_layout, log=lambda m: None)
    (target / "idx_y.npy").unlink()
    with pytest.raises(chardata.DataError, match=r"idx_y.npy is missing.*make data"):
        chardata.load(target)
    chardata.fetch(target, mirror=upstream_layout, log=lambda m: None)
    with open(target / "data.txt", "a") as f:
        f.write("x")
    with pytest.raises(chardata.DataError, match="data.txt is corrupt: SHA-256 expected 6c648f8f"):
        chardata.load(target)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "metadata.pkl"
    path.write_bytes(pickle.dumps({"ch2idx": {"a": 0}, "idx2ch": ["a"], "x": _RunsCode()}))
    with pytest.raises(chardata.DataError, match="refusing to load posix.system"):
        chardata.load_metadata(path)
    assert not (tmp_path / "pwned").exists()


def test_metadata_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "metadata.pkl"
    path.write_bytes(pickle.dumps({"ch2idx": {"a": 0.5}, "idx2ch": ["a"]}))
    with pytest.raises(chardata.DataError, match="does not hold"):
        chardata.load_metadata(path)


def test_loaded_data_is_the_published_cut(data_dir):
    data = chardata.load(data_dir)
    text = (data_dir / "data.txt").read_text(encoding="utf-8")
    assert data.inputs.shape == data.targets.shape == (15259, 20)
    assert data.vocab_size == len(set(text)) == 89
    decoded = "".join(data.vocab[i] for i in data.inputs[:3].flatten().tolist())
    assert decoded == text[:60]
    assert (data.targets[:, :-1] == data.inputs[:, 1:]).all()
    assert (data.targets[:-1, -1] == data.inputs[1:, 0]).all()


def test_other_sequence_lengths_cut_the_same_text(data_dir):
    data = chardata.load(data_dir, seq_len=50)
    assert data.inputs.shape == ((305190 - 1) // 50, 50)
    with pytest.raises(chardata.DataError, match="data.seq_len"):
        chardata.load(data_dir, seq_len=0)


def test_the_fetch_command_has_help_and_makes_no_folder_of_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        chardata.main(["--help"])
    assert stop.value.code == 0 and "CEREBRAL_DATA_MIRROR" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
