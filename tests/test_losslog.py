import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerebral.losslog import LossFileError, format_losses, parse_losses, read_losses, write_losses


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False)))
def test_round_trip(losses):
    assert parse_losses(format_losses(losses)) == losses


def test_published_style_and_trailing_blank_lines():
    assert parse_losses("[0] loss : 4.25\n[1] loss : 3.5") == [4.25, 3.5]
    assert parse_losses("[0] loss : 4.25\n[1] loss : 3.5\n\n") == [4.25, 3.5]
    assert parse_losses("") == []


@pytest.mark.parametrize("text,line", [
    ("[0] loss : 4.2\n[1] loss 3.1\n", 2), ("[0] loss : 4.2\n[2] loss : 3.1\n", 2),
    ("[0] loss : abc\n", 1), ("[0] loss : 4.2\n\n[1] loss : 3.1\n", 2),
    ("[0] loss : 4.2\n[1] loss : nan\n", 2), ("[0] loss : inf\n", 1),
])
def test_malformed_lines_are_named(text, line, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(LossFileError, match=f"bad.txt, line {line}:"):
        read_losses(path)


@pytest.mark.parametrize("spoil,reason", [(lambda path: path.write_bytes(b"\xff\xfe"), "not UTF-8 text"),
                                          (lambda path: path.mkdir(), "Is a directory")])
def test_an_unreadable_file_is_named(spoil, reason, tmp_path):
    path = tmp_path / "loss.txt"
    spoil(path)
    with pytest.raises(LossFileError, match=re.escape(f"{path} cannot be read as a loss file ({reason})")):
        read_losses(path)


def test_write_then_read(tmp_path):
    write_losses(tmp_path / "loss.txt", [4.0, 3.25])
    assert (tmp_path / "loss.txt").read_text() == "[0] loss : 4.0\n[1] loss : 3.25\n"
    assert read_losses(tmp_path / "loss.txt") == [4.0, 3.25]
