import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from cerebral import seqdata
from cerebral.data import DataError
from cerebral.seqdata import MNIST_FILES

# --- digits ---------------------------------------------------------------------------------------


def test_digits_shapes_values_and_split_sizes():
    data = seqdata.load_digits()
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.train_x.shape[1:] == data.test_x.shape[1:] == (8, 8)
    assert len(data.train_x) == len(data.train_y) and len(data.test_x) == len(data.test_y)
    assert len(data.train_y) + len(data.test_y) == 1797
    assert len(data.test_y) == 450  # ceil(0.25 * 1797)
    for x in (data.train_x, data.test_x):
        assert x.min() >= 0 and x.max() <= 1
    assert data.train_x.max() == 1  # 16 / 16: scaled, not clipped
    assert data.num_classes == 10 and data.input_size == 8 and data.vocab_size is None


def test_digits_split_is_stratified():
    data = seqdata.load_digits()
    everything = torch.cat([data.train_y, data.test_y])
    overall = torch.bincount(everything, minlength=10) / len(everything)
    in_test = torch.bincount(data.test_y, minlength=10) / len(data.test_y)
    assert (overall - in_test).abs().max() < 0.01


def test_digits_split_is_deterministic_and_follows_the_seed():
    a, b, c = seqdata.load_digits(), seqdata.load_digits(), seqdata.load_digits(split_seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert len(c.test_y) == len(a.test_y) and not torch.equal(a.test_x, c.test_x)


# --- mnist ----------------------------------------------------------------------------------------


def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=12, n_test=5, rows=4, cols=3, gz=False, seed=0):
    """A tiny IDX set; returns the arrays written, keyed by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, rows, cols)),
        MNIST_FILES[1]: rng.integers(0, 10, n_train),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, rows, cols)),
        MNIST_FILES[3]: rng.integers(0, 10, n_test),
    }
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        raw = idx_bytes(array, 0x803 if array.ndim == 3 else 0x801)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trips_pixels_and_labels(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    data = seqdata.load_mnist(tmp_path / "mnist")
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.train_x.shape == (12, 4, 3) and data.test_x.shape == (5, 4, 3)
    np.testing.assert_array_equal(data.train_x.numpy(), (arrays[MNIST_FILES[0]] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(data.test_x.numpy(), (arrays[MNIST_FILES[2]] / 255.0).astype(np.float32))
    assert data.train_y.tolist() == arrays[MNIST_FILES[1]].tolist()
    assert data.test_y.tolist() == arrays[MNIST_FILES[3]].tolist()
    assert data.num_classes == 10 and data.input_size == 3


def test_mnist_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.mnist_dir"):
        seqdata.load_mnist(tmp_path / "nowhere")


def test_mnist_missing_file_lists_all_four(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(DataError) as e:
        seqdata.load_mnist(tmp_path)
    message = str(e.value)
    assert message.startswith(f"{MNIST_FILES[3]} (or {MNIST_FILES[3]}.gz) is missing")
    assert all(name in message for name in MNIST_FILES) and "data.mnist_dir=" in message


def test_mnist_wrong_magic(tmp_path):
    arrays = write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[1]).write_bytes(idx_bytes(arrays[MNIST_FILES[1]][:, None, None], 0x803))
    with pytest.raises(DataError, match=f"{MNIST_FILES[1]} has magic number 0x00000803, expected 0x00000801"):
        seqdata.load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file(tmp_path, gz):
    write_mnist(tmp_path)
    raw = (tmp_path / MNIST_FILES[2]).read_bytes()[:-1]
    name = MNIST_FILES[2] + (".gz" if gz else "")
    (tmp_path / MNIST_FILES[2]).unlink()
    (tmp_path / name).write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match=f"{name} is {len(raw)} bytes but its header .* truncated"):
        seqdata.load_mnist(tmp_path)


def test_mnist_corrupt_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / f"{MNIST_FILES[0]}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=f"{MNIST_FILES[0]}.gz could not be read or decompressed"):
        seqdata.load_mnist(tmp_path)


def test_mnist_image_and_label_counts_must_agree(tmp_path):
    arrays = write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[1]).write_bytes(idx_bytes(arrays[MNIST_FILES[1]][:-1], 0x801))
    with pytest.raises(DataError, match=f"{MNIST_FILES[0]} holds 12 images but {MNIST_FILES[1]} holds 11"):
        seqdata.load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).write_bytes(idx_bytes(np.array([0, 1, 10, 2, 3]), 0x801))
    with pytest.raises(DataError, match=f"{MNIST_FILES[3]} has label 10"):
        seqdata.load_mnist(tmp_path)


def test_mnist_train_and_test_image_sizes_must_agree(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / MNIST_FILES[2]).write_bytes(idx_bytes(np.zeros((5, 3, 4)), 0x803))
    with pytest.raises(DataError, match="train and test must share one size"):
        seqdata.load_mnist(tmp_path)


# --- imdb -----------------------------------------------------------------------------------------

POSITIVE = [
    "Great movie!<br /><br />The acting was GREAT, great fun in 1999.",
    "A great film; wonderful story and wonderful cast.",
    "Loved it. 10/10 would watch again<br />great",
    "Wonderful, wonderful, wonderful.",
    "Brilliant acting and a great plot.",
    "Fun fun fun!!! 100% recommended.",
    "Superb direction; great score.",
    "I loved the story.",
    "Charming and wonderful.",
    "Great, simply great.",
]
NEGATIVE = [
    "Terrible movie.<br />The plot was awful and boring.",
    "Awful acting, awful script, 2 stars.",
    "Boring. Boring. Boring.",
    "I hated it; the worst film of 2005.",
    "Awful! Just awful.",
    "Dull and boring plot.",
    "The worst acting I have seen.",
    "Terrible, terrible script.",
    "Not good at all: awful.",
    "Boring film<br/>and dull.",
]


@pytest.fixture
def imdb_csv(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    reviews = [r for pair in zip(POSITIVE, NEGATIVE, strict=True) for r in pair]
    sentiments = ["positive", "negative"] * len(POSITIVE)
    pd.DataFrame({"review": reviews, "sentiment": sentiments}).to_csv(path, index=False)
    return path


def test_tokenize_drops_tags_digits_punctuation_and_stop_words():
    assert seqdata.tokenize("Great movie!<br /><br />The acting was GREAT, in 1999.") == [
        "great", "movie", "acting", "great"]
    assert seqdata.tokenize("10/10 a b2b <BR/>x") == ["b", "b", "x"]


def test_vocabulary_is_ordered_by_frequency_then_alphabet():
    tokens = [["b", "a", "c"], ["c", "a"], ["c", "d"]]
    assert seqdata.build_vocab(tokens, 10) == ("c", "a", "b", "d")
    assert seqdata.build_vocab(tokens, 2) == ("c", "a")


def test_encode_left_pads_truncates_to_first_words_and_drops_unknown_words():
    words = ("c", "a", "b")
    x = seqdata.encode([["a", "zzz", "b"], ["c", "a", "b", "c", "a"], []], words, 4)
    assert x.dtype == torch.int64
    assert x.tolist() == [[0, 0, 2, 3], [1, 2, 3, 1], [0, 0, 0, 0]]


def test_imdb_tokens_labels_and_split(imdb_csv):
    data = seqdata.load_imdb(imdb_csv, num_reviews=20, vocab_size=8, seq_len=6, test_fraction=0.25)
    assert data.train_x.shape == (15, 6) and data.test_x.shape == (5, 6)
    assert data.train_x.dtype == data.train_y.dtype == torch.int64
    assert data.num_classes == 2 and data.vocab_size == 9 and data.input_size is None
    assert len(data.words) == 8 and data.words[0] == "great"  # the most frequent train word
    assert not any(w.isdigit() or w in ("the", "and", "a", "br") for w in data.words)
    for x in (data.train_x, data.test_x):
        assert x.min() >= 0 and x.max() <= 8
    # each review's ids are a run at the right end: no padding after the first word
    for row in torch.cat([data.train_x, data.test_x]):
        nonzero = (row != 0).nonzero().flatten()
        assert nonzero.numel() == 0 or nonzero.tolist() == list(range(6 - nonzero.numel(), 6))
    # stratified: 0.25 of 10 + 10 leaves 2 or 3 of each class in the test set
    assert sorted(torch.bincount(data.test_y, minlength=2).tolist()) == [2, 3]
    assert set(data.train_y.tolist()) == {0, 1}


def test_imdb_label_and_ids_of_a_known_review(imdb_csv):
    data = seqdata.load_imdb(imdb_csv, num_reviews=20, vocab_size=1000, seq_len=3)
    ids = {w: i for i, w in enumerate(data.words, start=1)}
    x, y = torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])
    # "Wonderful, wonderful, wonderful." -> positive, exactly three ids
    three = [ids["wonderful"]] * 3
    assert [int(label) for row, label in zip(x, y, strict=True) if row.tolist() == three] == [1]
    # "Awful acting, awful script, 2 stars." is truncated to its first three words
    first = [ids["awful"], ids["acting"], ids["awful"]]
    assert [int(label) for row, label in zip(x, y, strict=True) if row.tolist() == first] == [0]
    # "I loved the story." -> two words after stop words: padded on the left
    assert [0, ids["loved"], ids["story"]] in x.tolist()


def test_imdb_vocabulary_comes_from_the_train_split_only(imdb_csv):
    data = seqdata.load_imdb(imdb_csv, num_reviews=20, vocab_size=1000)
    train_words = {data.words[i - 1] for i in data.train_x.unique().tolist() if i}
    assert train_words == set(data.words)


def test_imdb_is_deterministic(imdb_csv):
    a, b = (seqdata.load_imdb(imdb_csv, num_reviews=20, vocab_size=5) for _ in range(2))
    assert a.words == b.words and torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_imdb_num_reviews_takes_the_first_rows(imdb_csv):
    data = seqdata.load_imdb(imdb_csv, num_reviews=8, test_fraction=0.5)
    assert len(data.train_y) + len(data.test_y) == 8
    # the first 8 rows hold POSITIVE[:4] and NEGATIVE[:4]; no word from a later row gets in
    first_rows = {w for review in POSITIVE[:4] + NEGATIVE[:4] for w in seqdata.tokenize(review)}
    assert set(data.words) <= first_rows and "superb" not in data.words


def test_imdb_more_reviews_than_the_file_has(imdb_csv):
    with pytest.raises(DataError, match="has 20 reviews, fewer than data.num_reviews=5000"):
        seqdata.load_imdb(imdb_csv)


def test_imdb_with_only_a_header_says_so(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    path.write_text("review,sentiment\n")
    with pytest.raises(DataError, match="holds no reviews, only its header"):
        seqdata.load_imdb(path)


def test_imdb_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.imdb_csv=PATH"):
        seqdata.load_imdb(tmp_path / "IMDB Dataset.csv")


def test_imdb_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["good"], "label": ["positive"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"columns \['text', 'label'\] but needs \['review', 'sentiment'\]"):
        seqdata.load_imdb(path, num_reviews=1)


def test_imdb_bad_sentiment_values(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"review": ["good", "bad", "meh"], "sentiment": ["positive", "negative", "neutral"]}).to_csv(
        path, index=False)
    with pytest.raises(DataError, match=r"bad.csv: column 'sentiment' has values \['neutral'\]"):
        seqdata.load_imdb(path, num_reviews=3)


def test_imdb_too_few_reviews_to_stratify(imdb_csv):
    with pytest.raises(DataError, match="cannot split 2 examples stratified"):
        seqdata.load_imdb(imdb_csv, num_reviews=2)
