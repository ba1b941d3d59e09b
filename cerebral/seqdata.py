"""Sequence-classification data: scikit-learn digits, MNIST, the IMDB reviews, MNIST-1D and
Japanese Vowels.

Each loader returns a `ClassificationData` ready for a recurrent classifier: images are read
one pixel row per time step (float32 [N, T, F]), MNIST-1D one value per step; reviews are token
ids of their first `seq_len` known words, left-padded with 0 so that the last time step, where
the classifier reads the hidden state, holds the last of those words; Japanese Vowels'
utterances of 7 to 29 steps are left-padded with NaN, which no core may read (the classifier
packs them). Loaders read files they are given (`cerebral.taskdata` downloads them) or data a
package ships or generates. Every bad input raises `cerebral.errors.DataError`.
"""

import gzip
import hashlib
import random
import re
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cerebral.data import sha256
from cerebral.errors import ConfigError, DataError
from cerebral.tsfile import read_ts


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
    digests: dict = field(default_factory=dict)  # what the data was read or generated from -> its SHA-256 (run.json)

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


def validation_split(targets, fraction=0.1, seed=0):
    """(kept, held out): index tensors of a stratified `fraction` of the training set, drawn with
    `seed`, on which epochs and learning rate are chosen before the test set is looked at."""
    kept, held_out, _, _ = _split(np.arange(len(targets)), targets.numpy(), fraction, seed, "data.validation")
    return torch.from_numpy(kept), torch.from_numpy(held_out)


def array_sha256(*arrays):
    """One SHA-256 over numpy arrays, each one's dtype, shape and bytes in turn."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_digits(test_fraction=0.25, split_seed=0):
    """scikit-learn's 1797 8x8 digits, one image row per time step, pixels scaled to [0, 1]."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = _split(x, y, test_fraction, split_seed, "digits")
    return ClassificationData(*(torch.from_numpy(a) for a in (train_x, train_y, test_x, test_y)), num_classes=10,
                              digests={"sklearn.datasets.load_digits": array_sha256(digits.images, digits.target)})


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim


def _mnist_path(mnist_dir, name):
    """`name` or `name.gz` in the MNIST folder; the plain file wins if both are there."""
    for candidate in (mnist_dir / name, mnist_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name} (or {name}.gz) is missing from {mnist_dir}. MNIST needs the four files "
                    f"{', '.join(MNIST_FILES)} (plain or .gz) in data.mnist_dir={mnist_dir}; leave "
                    "data.mnist_dir unset to download them into data.dir.")


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
        raise DataError(f"the MNIST folder {mnist_dir} does not exist. Put {', '.join(MNIST_FILES)} in a "
                        "folder and pass data.mnist_dir=DIR, or leave data.mnist_dir unset to download them.")
    train_x, train_y, train_path = _mnist_split(mnist_dir, *MNIST_FILES[:2])
    test_x, test_y, test_path = _mnist_split(mnist_dir, *MNIST_FILES[2:])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{train_path.name} has {tuple(train_x.shape[1:])} images but {test_path.name} has "
                        f"{tuple(test_x.shape[1:])}; train and test must share one size. Download both again.")
    return ClassificationData(train_x, train_y, test_x, test_y, num_classes=10,
                              digests={path.name: sha256(path) for path in (_mnist_path(mnist_dir, n) for n in MNIST_FILES)})


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


def _imdb_csv_reviews(csv_path, num_reviews):
    """(reviews, labels) of the first `num_reviews` rows of Kaggle's "IMDB Dataset.csv"."""
    import pandas as pd

    if not csv_path.is_file():
        raise DataError(f"the IMDB file {csv_path} does not exist. Download \"IMDB Dataset.csv\" (Kaggle, "
                        "IMDB Dataset of 50K Movie Reviews) and pass data.imdb_csv=PATH, or leave data.imdb_csv "
                        "unset to download the Stanford archive.")
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
    return frame["review"].fillna("").astype(str).tolist(), frame["sentiment"].map(SENTIMENTS).to_numpy(dtype=np.int64)


IMDB_LABELLED = re.compile(r"aclImdb/(?:train|test)/(pos|neg)/[^/]+\.txt")  # unsup/ has no labels
ARCHIVE_SHUFFLE_SEED = 0


def _imdb_archive_reviews(archive_path, num_reviews):
    """(reviews, labels) of `num_reviews` of the 50,000 labelled reviews in the Stanford archive
    aclImdb_v1.tar.gz (train and test, pos and neg): sorted by path, shuffled with seed 0, the
    first `num_reviews`. Kaggle's CSV holds the same reviews in an order of its own, so the
    notebook's first 5,000 are other reviews."""
    labelled = {}
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            for member in archive:
                match = IMDB_LABELLED.fullmatch(member.name)
                if match and member.isfile():
                    labelled[member.name] = (archive.extractfile(member).read(), int(match[1] == "pos"))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise DataError(f"{archive_path} could not be read as a .tar.gz archive: {e}. Delete it to download it again.") from e
    if len(labelled) < num_reviews:
        raise DataError(f"{archive_path} holds {len(labelled)} labelled reviews, fewer than data.num_reviews={num_reviews}. "
                        f"Pass data.num_reviews={len(labelled)} or less.")
    paths = sorted(labelled)
    chosen = [paths[i] for i in np.random.default_rng(ARCHIVE_SHUFFLE_SEED).permutation(len(paths))[:num_reviews]]
    try:
        reviews = [labelled[path][0].decode("utf-8") for path in chosen]
    except UnicodeDecodeError as e:
        raise DataError(f"{archive_path}: a review is not UTF-8 text ({e}); it is not the Stanford archive") from e
    return reviews, np.array([labelled[path][1] for path in chosen], dtype=np.int64)


def load_imdb(path, num_reviews=5000, vocab_size=1000, seq_len=69, test_fraction=0.25, split_seed=0):
    """`num_reviews` IMDB reviews as token ids, positive = 1, negative = 0: the first rows of
    Kaggle's "IMDB Dataset.csv", or from the Stanford archive (a path ending in .tar.gz) as
    `_imdb_archive_reviews` chooses them.

    The vocabulary is built from the train split only, so the test set cannot leak into it.
    """
    path = Path(path).expanduser()
    for name, value in (("num_reviews", num_reviews), ("vocab_size", vocab_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"imdb: data.{name} must be a positive integer, got {value!r}")
    read = _imdb_archive_reviews if path.name.endswith(".tar.gz") else _imdb_csv_reviews
    reviews, labels = read(path, num_reviews)
    train_text, test_text, train_y, test_y = _split(reviews, labels, test_fraction, split_seed, str(path))
    train_tokens, test_tokens = [tokenize(r) for r in train_text], [tokenize(r) for r in test_text]
    words = build_vocab(train_tokens, vocab_size)
    return ClassificationData(encode(train_tokens, words, seq_len), torch.from_numpy(train_y),
                              encode(test_tokens, words, seq_len), torch.from_numpy(test_y),
                              num_classes=2, vocab_size=vocab_size + 1, words=words, digests={path.name: sha256(path)})


def require_mnist1d():
    """The mnist1d package's `data` module, or a one-line ConfigError naming the extra that installs it."""
    try:
        from mnist1d import data
    except ImportError as e:
        raise ConfigError(f"task=mnist1d needs the mnist1d package of the tasks extra ({e}): "
                          "pip install -e '.[tasks]' (make setup installs it)") from None
    return data


def load_mnist1d():
    """MNIST-1D as the mnist1d package generates it offline from its templates with its default
    arguments (seed 42): its 4,000 training and 1,000 test sequences of 40 values, one value per
    time step, 10 classes. The generator reseeds Python's and numpy's global random state; both
    are put back, so that it changes nothing else in the run."""
    mnist1d = require_mnist1d()
    states = random.getstate(), np.random.get_state()
    try:
        generated = mnist1d.make_dataset(mnist1d.get_dataset_args())
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    arrays = [generated[key] for key in ("x", "y", "x_test", "y_test")]
    x, y, x_test, y_test = (torch.from_numpy(np.asarray(a)) for a in arrays)
    return ClassificationData(x.float().unsqueeze(-1), y.long(), x_test.float().unsqueeze(-1), y_test.long(),
                              num_classes=10, digests={"mnist1d.data.make_dataset": array_sha256(*arrays)})


def left_pad(series, value=float("nan")):
    """float32 [N, T_max, F] of series [T_i, F], each at the end of its row behind `value`."""
    out = torch.full((len(series), max(len(s) for s in series), series[0].shape[1]), value)
    for row, s in enumerate(series):
        out[row, out.shape[1] - len(s):] = torch.from_numpy(s)
    return out


JAPANESE_VOWELS_FILES = ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts")


def load_japanese_vowels(folder):
    """The UEA archive's Japanese Vowels, its own train/test split: utterances of 12 cepstral
    coefficients, 7 to 29 steps each, left-padded with NaN (`left_pad`), 9 speakers."""
    folder = Path(folder)
    (train, train_y, classes), (test, test_y, test_classes) = (read_ts(folder / name) for name in JAPANESE_VOWELS_FILES)
    if classes != test_classes:
        raise DataError(f"{folder}: the train and test files list other class labels ({classes} and {test_classes})")
    if train[0].shape[1] != test[0].shape[1]:
        raise DataError(f"{folder}: the train and test series have {train[0].shape[1]} and {test[0].shape[1]} dimensions")
    return ClassificationData(left_pad(train), torch.from_numpy(train_y), left_pad(test), torch.from_numpy(test_y),
                              num_classes=len(classes), digests={name: sha256(folder / name) for name in JAPANESE_VOWELS_FILES})
