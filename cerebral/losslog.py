"""The published loss-file format, `[i] loss : <float>` one line per epoch from 0.

This module is the only reader and writer of loss files in the project.
"""

import math
import re
from pathlib import Path

from cerebral.atomic import write_text_atomic
from cerebral.errors import LossFileError

_LINE = re.compile(r"\[(\d+)\] loss : (\S+)")


def format_losses(losses):
    return "".join(f"[{i}] loss : {float(v)!r}\n" for i, v in enumerate(losses))


def parse_losses(text, name="<text>"):
    """The per-epoch losses in `text`; a trailing newline or one blank last line is allowed."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[-1].strip() == "":
        lines.pop()
    losses = []
    for number, line in enumerate(lines, start=1):
        match = _LINE.fullmatch(line.rstrip("\r"))
        if match is None:
            raise LossFileError(f"{name}, line {number}: expected '[{len(losses)}] loss : "
                                f"<float>', got {line!r}")
        if int(match.group(1)) != len(losses):
            raise LossFileError(f"{name}, line {number}: epoch index {match.group(1)}, "
                                f"expected {len(losses)} (one line per epoch from 0)")
        try:
            loss = float(match.group(2))
        except ValueError:
            raise LossFileError(f"{name}, line {number}: {match.group(2)!r} is not a number") from None
        if not math.isfinite(loss):  # training stops before it would write one (TrainingDiverged)
            raise LossFileError(f"{name}, line {number}: {match.group(2)!r} is not a finite loss")
        losses.append(loss)
    return losses


def read_losses(path):
    """The losses in the file at `path`; LossFileError naming it when it cannot be read at all (a
    folder, not UTF-8 text, no permission), as for a malformed line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeError) else e.strerror or type(e).__name__
        raise LossFileError(f"{path} cannot be read as a loss file ({reason}): it should be UTF-8 text of "
                            "'[i] loss : <float>' lines; replace or remove it") from None
    return parse_losses(text, name=str(path))


def write_losses(path, losses):
    write_text_atomic(path, format_losses(losses))
