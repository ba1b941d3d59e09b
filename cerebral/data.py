"""The Simpsons character data and the published loss curves, fetched and verified.

Every file comes from mr-ravin/cerebral-rnn-experimental-results at a pinned commit and is
checked against a pinned SHA-256 before it is used. `CEREBRAL_DATA_MIRROR=DIR` copies from a
local checkout of that repository instead of downloading; `CEREBRAL_DATA_URL` replaces the
download base URL. Run `python -m cerebral.data [DIR]` (`make data`) to fetch. `fetch` serves
the classification tasks' downloads too, from their own `Origin` (`cerebral.taskdata`).
"""

import argparse
import hashlib
import io
import os
import pickle
import shutil
import sys
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cerebral.atomic import atomic_path, nearest_existing
from cerebral.errors import DataError

UPSTREAM_REPO = "mr-ravin/cerebral-rnn-experimental-results"
UPSTREAM_COMMIT = "634604917fea06b7ba4e5722a8b1184cd79d7fe6"
DEFAULT_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"
DEFAULT_DIR = Path("data")

# upstream path -> (path under the local data folder, SHA-256)
FILES = {
    "data/data.txt": ("data.txt", "6c648f8fa2f1c407bb3b1b977aa8431f680ed31486c8fd2127ed4c9b2a7607ab"),
    "data/idx_x.npy": ("idx_x.npy", "021510777f195b32726ce959c22c948bedb3a79cb41d0366c1bd84f764048766"),
    "data/idx_y.npy": ("idx_y.npy", "1da8392668a636c37933e4799c3e90bdb29e24d2d9af890bb096ffd1bcd8ad57"),
    "data/metadata.pkl": ("metadata.pkl", "fb25e741e6ff04240503caf929873f50e5e48008b0de309652c3cce0e684ba34"),
    "loss_values/single_lstm.txt": (
        "loss_values/single_lstm.txt", "0122f35d5bf050ae78545716f48d43b1597ca060510491f514a8c25b6565542d"),
    "loss_values/2stack_lstm.txt": (
        "loss_values/2stack_lstm.txt", "9234c56e7566cb941d1f0e3ed6eaa15719eb990b809bbfd0f3a5a31d341736fa"),
    "loss_values/proposed_model.txt": (
        "loss_values/proposed_model.txt", "7c6827614fc6e43b8cc55d45b8f6d7e0865397ccb2634f840864937018a99f0f"),
}

# model name -> the published curve it is compared with
PUBLISHED_CURVES = {
    "single_lstm": "loss_values/single_lstm.txt",
    "stacked_lstm": "loss_values/2stack_lstm.txt",
    "cerebral_lstm": "loss_values/proposed_model.txt",
}

PUBLISHED_SEQ_LEN = 20  # the length the upstream idx_x/idx_y arrays were cut at


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_pinned(path, expected):
    """Whether the file at `path` exists with the SHA-256 `expected`."""
    return path.is_file() and sha256(path) == expected


def _fix_hint():
    return ("Run `make data` (or `python -m cerebral.data`) to fetch it again; "
            "set CEREBRAL_DATA_MIRROR=DIR to copy from a local checkout of "
            f"{UPSTREAM_REPO} instead of downloading.")


@dataclass(frozen=True)
class Origin:
    """Where a set of pinned files comes from, for `fetch` and its messages: the default base
    address, the variables that redirect it, what a mirror folder holds and what the pins are."""

    url: str
    mirror_var: str
    url_var: str
    mirror_layout: str
    pinned_as: str


SIMPSONS = Origin(DEFAULT_URL, "CEREBRAL_DATA_MIRROR", "CEREBRAL_DATA_URL", f"a local checkout of {UPSTREAM_REPO}",
                  f"commit {UPSTREAM_COMMIT[:7]} of {UPSTREAM_REPO}")


def copy_source(upstream_path, out, mirror, base_url, origin):
    """Write `upstream_path` from the mirror folder, or else from the base address, into the open
    file `out`; return where it came from."""
    if mirror is not None:
        source = Path(mirror) / upstream_path
        if not source.is_file():
            raise DataError(f"{upstream_path} is missing from the mirror {mirror} ({origin.mirror_var}). "
                            f"Point it at {origin.mirror_layout}, or unset it to download.")
        with open(source, "rb") as f:
            shutil.copyfileobj(f, out)
        return source
    source = f"{base_url.rstrip('/')}/{upstream_path}"
    try:
        with urllib.request.urlopen(source, timeout=60) as response:
            shutil.copyfileobj(response, out)
    except (OSError, ValueError) as e:  # urllib's errors, refused connections, timeouts; a URL without a scheme
        raise DataError(f"could not download {upstream_path} from {source}: {e}. Check the connection and "
                        f"{origin.url_var}, or set {origin.mirror_var}=DIR to {origin.mirror_layout}.") from e
    return source


def check_pinned(path, name, source, expected, origin):
    """Refuse the file at `path` (`name` from `source`) unless its SHA-256 is the pinned one."""
    actual = sha256(path)
    if actual != expected:
        raise DataError(f"{name} from {source} is not the pinned file: SHA-256 expected {expected}, got {actual}. "
                        f"The source is corrupt or not {origin.pinned_as}; fix {origin.url_var} / "
                        f"{origin.mirror_var}, or unset both to download from {origin.url}.")


def _fetch_one(upstream_path, target, expected, mirror, base_url, origin):
    """Copy or download one file to a temporary name, verify it, then rename it into place."""
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        source = copy_source(upstream_path, out, mirror, base_url, origin)
        out.close()
        check_pinned(tmp, upstream_path, source, expected, origin)


@contextmanager
def no_empty_folders_left(folder):
    """Where the block fails, remove the folders that did not exist before it (`folder` and the
    parents made for it) if they hold no file, so that a failed fetch leaves the disk as it found it."""
    new = [p for p in (Path(folder), *Path(folder).parents) if not p.exists()]
    try:
        yield
    except BaseException:
        if new and new[-1].is_dir() and not any(p.is_file() for p in new[-1].rglob("*")):
            shutil.rmtree(new[-1], ignore_errors=True)  # the fetch's own error is the one to report
        raise


def make_data_folder(folder):
    """Create `folder` (and its parents), or raise a DataError naming what is in the way."""
    folder = Path(folder)
    blocker = nearest_existing(folder)
    if not blocker.is_dir():
        where = "" if blocker == folder else f" cannot be made: {blocker}"
        raise DataError(f"the data folder {folder}{where} is a file; give another folder (data.dir=PATH, or --data PATH)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot make the data folder {folder} ({e.strerror}); give another folder "
                        "(data.dir=PATH, or --data PATH)") from None


def fetch(data_dir=DEFAULT_DIR, mirror=None, base_url=None, log=print, files=FILES, origin=SIMPSONS):
    """Fetch every pinned file of `files` (upstream path -> (local path, SHA-256)) into `data_dir`
    from `origin`; files already present and verified are kept."""
    mirror = mirror if mirror is not None else os.environ.get(origin.mirror_var) or None
    base_url = base_url or os.environ.get(origin.url_var) or origin.url
    data_dir = Path(data_dir)
    with no_empty_folders_left(data_dir):
        make_data_folder(data_dir)
        for upstream_path, (local, expected) in files.items():
            target = data_dir / local
            if is_pinned(target, expected):
                continue
            _fetch_one(upstream_path, target, expected, mirror, base_url, origin)
            log(f"fetched {target} (sha256 {expected[:12]}...)")
    return data_dir


def verified_path(data_dir, upstream_path):
    """The local path of one pinned file, after checking its digest."""
    local, expected = FILES[upstream_path]
    path = Path(data_dir) / local
    if not path.is_file():
        raise DataError(f"{path} is missing. {_fix_hint()}")
    actual = sha256(path)
    if actual != expected:
        raise DataError(f"{path} is corrupt: SHA-256 expected {expected}, got {actual}. "
                        f"Delete it and fetch again. {_fix_hint()}")
    return path


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what the pickle opcodes build themselves: dicts, lists, strings, numbers."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: metadata.pkl may hold only plain dicts, lists, "
            "strings and ints")


def load_metadata(path):
    """The vocabulary from `metadata.pkl`, unpickled without constructing any class."""
    with open(path, "rb") as f:
        try:
            meta = _PlainUnpickler(io.BytesIO(f.read())).load()
        except pickle.UnpicklingError as e:
            raise DataError(f"{path}: {e}") from e
    ok = (isinstance(meta, dict) and isinstance(meta.get("idx2ch"), list)
          and isinstance(meta.get("ch2idx"), dict)
          and all(isinstance(c, str) for c in meta["idx2ch"])
          and all(isinstance(k, str) and type(v) is int for k, v in meta["ch2idx"].items()))
    if not ok:
        raise DataError(f"{path} does not hold {{'ch2idx': dict[str, int], 'idx2ch': list[str]}}")
    return meta


@dataclass
class CharData:
    """The character data cut into non-overlapping sequences; targets are inputs shifted by one."""

    inputs: torch.Tensor   # [N, seq_len] int64
    targets: torch.Tensor  # [N, seq_len] int64
    vocab: list            # index -> character

    @property
    def vocab_size(self):
        return len(self.vocab)


def cut_sequences(ids, seq_len):
    """x[n] = ids[n*L:(n+1)*L], y[n] = ids[n*L+1:(n+1)*L+1], as the upstream `data.py`."""
    n = (len(ids) - 1) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len), ids[1 : n * seq_len + 1].reshape(n, seq_len)


def load(data_dir=DEFAULT_DIR, seq_len=PUBLISHED_SEQ_LEN):
    """Load and cross-check the verified files; return the data cut at `seq_len`."""
    text = verified_path(data_dir, "data/data.txt").read_text(encoding="utf-8")
    meta = load_metadata(verified_path(data_dir, "data/metadata.pkl"))
    arrays = [np.load(verified_path(data_dir, f"data/idx_{n}.npy"), allow_pickle=False)
              for n in "xy"]
    vocab, ch2idx = meta["idx2ch"], meta["ch2idx"]
    if any(ch2idx.get(c) != i for i, c in enumerate(vocab)) or len(ch2idx) != len(vocab):
        raise DataError("metadata.pkl: ch2idx and idx2ch are not inverse of each other")
    unknown = sorted(set(text) - set(ch2idx))
    if unknown:
        raise DataError(f"data.txt has characters missing from the vocabulary: {unknown[:10]}")
    ids = np.array([ch2idx[c] for c in text], dtype=np.int64)
    for name, published, ours in zip("xy", arrays, cut_sequences(ids, PUBLISHED_SEQ_LEN), strict=True):
        if published.shape != ours.shape or not np.array_equal(published, ours):
            raise DataError(f"idx_{name}.npy does not equal data.txt cut into sequences of "
                            f"{PUBLISHED_SEQ_LEN} under metadata.pkl's vocabulary")
    if not isinstance(seq_len, int) or not 1 <= seq_len < len(ids):
        raise DataError(f"data.seq_len must be an integer in [1, {len(ids) - 1}], got {seq_len!r}")
    x, y = cut_sequences(ids, seq_len)
    return CharData(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), list(vocab))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch the Simpsons data and the published curves, SHA-256 "
                                                 "checked (offline: CEREBRAL_DATA_MIRROR=DIR).")
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DIR, help=f"default: {DEFAULT_DIR}")
    data_dir = parser.parse_args(argv).data_dir
    try:
        fetch(data_dir)
        data = load(data_dir)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{data_dir}: {len(FILES)} files verified; {data.inputs.shape[0]} sequences of "
          f"{data.inputs.shape[1]} characters, vocabulary of {data.vocab_size}")


if __name__ == "__main__":
    main()
