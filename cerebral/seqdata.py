"""Sequence-classification data: scikit-learn digits, MNIST and the Kaggle IMDB reviews.

Each loader returns a `ClassificationData` ready for a recurrent classifier: images are read
one pixel row per time step (float32 [N, T, F]); reviews are token ids of their first `seq_len`
known words, left-padded with 0 so that the last time step, where the classifier reads the
hidden state, holds the last of those words. Nothing is downloaded: digits ships inside scikit-learn, MNIST and IMDB are read
from files the user names. Every bad input raises `cerebral.errors.DataError`.
"""

import gzip
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cerebral.errors import DataError


@dataclass
class ClassificationData:
    """A fixed train/test split of sequences and their class labels."""

    train_x: torch.Tensor  # float32 [N, T, F] (pixel rows) or int64 [N, T] (token ids, 0 = padding)
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    vocab_size: int | None = None  # token tasks: embedding table size incl. padding id 0; None for float features
    words: tuple | None = None     # token tasks: the vocabulary, word of id i at words[i - 1]

    @property
    def input_size(self):
        """Features per time step for float inputs; None for token ids (the embedding decides)."""
        return None if self.vocab_size is not None else self.train_x.shape[-1]


def _split(x, y, test_fraction, split_seed, what):
    """A stratified split, so the test set keeps each class's share of the whole."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise DataError(f"{what}: test_fraction must be in (0, 1), got {test_fraction!r}")
    try:
        return train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=split_seed)
    except ValueError as e:  # too few rows for a stratified split of this size
        raise DataError(f"{what}: cannot split {len(y)} examples stratified with "
                        f"test_fraction={test_fraction}: {e}. Use more examples or another fraction.") from e


def load_digits(test_fraction=0.25, split_seed=0):
    """scikit-learn's 1797 8x8 digits, one image row per time step, pixels scaled to [0, 1]."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = _split(x, y, test_fraction, split_seed, "digits")
    return ClassificationData(*(torch.from_numpy(a) for a in (train_x, train_y, test_x, test_y)), num_classes=10)


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim


def _mnist_path(mnist_dir, name):
    """`name` or `name.gz` in the MNIST folder; the plain file wins if both are there."""
    for candidate in (mnist_dir / name, mnist_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name} (or {name}.gz) is missing from {mnist_dir}. MNIST needs the four files "
                    f"{', '.join(MNIST_FILES)} (plain or .gz): download them from {MNIST_URL} "
                    f"into {mnist_dir} and pass data.mnist_dir={mnist_dir}.")


def _read_idx(path, magic, ndim):
    """The uint8 array in an IDX file, after checking its magic number and length against its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} could not be read or decompressed: {e}. Download it again.") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is {len(raw)} bytes, shorter than an IDX header. Download it again.")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} has magic number {found:#010x}, expected {magic:#010x}; it is not an MNIST "
                        f"{'image' if ndim == 3 else 'label'} file in IDX format. Download it again.")
    dims = [int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path} is {len(raw)} bytes but its header {dims} says {expected}; "
                        "it is truncated or corrupt. Download it again.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_split(mnist_dir, images_name, labels_name):
    images_path, labels_path = _mnist_path(mnist_dir, images_name), _mnist_path(mnist_dir, labels_name)
    images, labels = _read_idx(images_path, _IDX_IMAGES, 3), _read_idx(labels_path, _IDX_LABELS, 1)
    if len(images) != len(labels):
        raise DataError(f"{images_path.name} holds {len(images)} images but {labels_path.name} holds "
                        f"{len(labels)} labels; the two files are from different sets. Download both again.")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} has label {labels.max()}, outside the digits 0..9. Download it again.")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64)), images_path


def load_mnist(mnist_dir):
    """MNIST from the standard IDX files in `mnist_dir`, one pixel row per time step, scaled to [0, 1].

    Sizes come from the file headers rather than being fixed at 60000 images of 28x28, so any
    IDX set whose train and test images share one shape loads.
    """
    mnist_dir = Path(mnist_dir).expanduser()
    if not mnist_dir.is_dir():
        raise DataError(f"the MNIST folder {mnist_dir} does not exist. Download {', '.join(MNIST_FILES)} "
                        f"from {MNIST_URL} into a folder and pass data.mnist_dir=DIR.")
    train_x, train_y, train_path = _mnist_split(mnist_dir, *MNIST_FILES[:2])
    test_x, test_y, test_path = _mnist_split(mnist_dir, *MNIST_FILES[2:])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{train_path.name} has {tuple(train_x.shape[1:])} images but {test_path.name} has "
                        f"{tuple(test_x.shape[1:])}; train and test must share one size. Download both again.")
    return ClassificationData(train_x, train_y, test_x, test_y, num_classes=10)


IMDB_COLUMNS = ("review", "sentiment")
SENTIMENTS = {"negative": 0, "positive": 1}
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NON_LETTER = re.compile(r"[^a-z]+")


def tokenize(review):
    """Lowercased words of a review, without `<br />` tags, non-letters or English stop words.

    The upstream notebook used NLTK's stop-word list, which downloads at run time; scikit-learn's
    bundled list stands in for it.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    text = _NON_LETTER.sub(" ", _BREAK.sub(" ", review.lower()))
    return [w for w in text.split() if w not in ENGLISH_STOP_WORDS]


def build_vocab(token_lists, vocab_size):
    """The `vocab_size` most frequent words, most frequent first, ties alphabetical so the order is fixed."""
    counts = Counter(w for tokens in token_lists for w in tokens)
    return tuple(sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size])


def encode(token_lists, words, seq_len):
    """Ids (1-based in `words`), out-of-vocabulary words dropped, first `seq_len` kept, left-padded with 0."""
    index = {w: i for i, w in enumerate(words, start=1)}
    out = torch.zeros(len(token_lists), seq_len, dtype=torch.int64)
    for row, tokens in enumerate(token_lists):
        ids = [index[w] for w in tokens if w in index][:seq_len]
        if ids:
            out[row, seq_len - len(ids):] = torch.tensor(ids)
    return out


def load_imdb(csv_path, num_reviews=5000, vocab_size=1000, seq_len=69, test_fraction=0.25, split_seed=0):
    """The first `num_reviews` rows of Kaggle's "IMDB Dataset.csv" as token ids; positive = 1, negative = 0.

    The vocabulary is built from the train split only, so the test set cannot leak into it.
    """
    import pandas as pd

    csv_path = Path(csv_path).expanduser()
    for name, value in (("num_reviews", num_reviews), ("vocab_size", vocab_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"imdb: data.{name} must be a positive integer, got {value!r}")
    if not csv_path.is_file():
        raise DataError(f"the IMDB file {csv_path} does not exist. Download \"IMDB Dataset.csv\" (Kaggle, "
                        "IMDB Dataset of 50K Movie Reviews) and pass data.imdb_csv=PATH.")
    try:
        frame = pd.read_csv(csv_path, nrows=num_reviews)
    except (ValueError, OSError) as e:  # pandas' parser errors are ValueErrors
        raise DataError(f"{csv_path} could not be read as CSV: {e}. Pass the Kaggle file as data.imdb_csv=PATH.") from e
    missing = [c for c in IMDB_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{csv_path} has columns {list(frame.columns)} but needs {list(IMDB_COLUMNS)} "
                        f"(missing {missing}); is it Kaggle's \"IMDB Dataset.csv\"?")
    if len(frame) == 0:
        raise DataError(f"{csv_path} holds no reviews, only its header; pass Kaggle's \"IMDB Dataset.csv\" as "
                        "data.imdb_csv=PATH")
    if len(frame) < num_reviews:
        raise DataError(f"{csv_path} has {len(frame)} reviews, fewer than data.num_reviews={num_reviews}. "
                        f"Pass data.num_reviews={len(frame)} or less.")
    unknown = sorted(set(frame["sentiment"].astype(str)) - set(SENTIMENTS))
    if unknown:
        raise DataError(f"{csv_path}: column 'sentiment' has values {unknown[:5]}; only "
                        f"{sorted(SENTIMENTS)} are allowed. Fix those rows or use the original file.")
    reviews = frame["review"].fillna("").astype(str).tolist()
    labels = frame["sentiment"].map(SENTIMENTS).to_numpy(dtype=np.int64)
    train_text, test_text, train_y, test_y = _split(reviews, labels, test_fraction, split_seed, str(csv_path))
    train_tokens, test_tokens = [tokenize(r) for r in train_text], [tokenize(r) for r in test_text]
    words = build_vocab(train_tokens, vocab_size)
    return ClassificationData(encode(train_tokens, words, seq_len), torch.from_numpy(train_y),
                              encode(test_tokens, words, seq_len), torch.from_numpy(test_y),
                              num_classes=2, vocab_size=vocab_size + 1, words=words)
