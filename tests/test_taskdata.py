"""The classification tasks' downloads (cerebral.taskdata): MNIST, IMDB and Japanese Vowels fetched
into data.dir from a local HTTP server (CEREBRAL_TASK_DATA_URL), a mirror folder
(CEREBRAL_TASK_DATA_MIRROR), the UEA archive's zip or an installed aeon, each file checked against
its pinned SHA-256. The fixtures are small files in the real formats, pinned here in place of the
real digests; against the real pins they are refused, in one line naming the file and the mirror
variable."""

import dataclasses
import io
import socket
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from test_seqdata import write_mnist
from test_tsfile import FIXTURE

from cerebral import seqdata, taskdata
from cerebral.config import compose
from cerebral.data import sha256
from cerebral.errors import DataError
from cerebral.tasks import make_task
from cerebral.train import train

MIRROR, URL = taskdata.MIRROR_VAR, taskdata.URL_VAR


@pytest.fixture
def offline(monkeypatch):
    """No task data variable set and no aeon to copy from: every file comes from where a test says."""
    monkeypatch.delenv(MIRROR, raising=False)
    monkeypatch.delenv(URL, raising=False)
    hidden = dataclasses.replace(taskdata.DOWNLOADS["japanese_vowels"], package_folder="no_such_package/data")
    monkeypatch.setitem(taskdata.DOWNLOADS, "japanese_vowels", hidden)


def dead_url():
    """The address of a port that was free a moment ago and has no listener now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def add(archive, name, text):
    raw = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    archive.addfile(info, io.BytesIO(raw))


def imdb_archive(folder, per_folder=3):
    """A small aclImdb_v1.tar.gz laid out as Stanford's: `per_folder` reviews in each of train/test
    x pos/neg, each text naming its own path, and unlabelled ones that must be left out."""
    path = folder / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        add(archive, "aclImdb/README", "not a review")
        for split in ("test", "train"):
            for label in ("pos", "neg"):
                for i in range(per_folder):
                    name = f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt"
                    add(archive, name, f"{name} a {'wonderful' if label == 'pos' else 'dreadful'} film<br />plot")
            add(archive, f"aclImdb/{split}/unsup/0_0.txt" if split == "train" else "aclImdb/test/urls_pos.txt", "unlabelled")
    return path


def fixtures(name, folder):
    """The files of download `name`, small and in their real formats, in `folder` under their original names."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        write_mnist(folder, n_train=40, n_test=10, rows=5, cols=4, gz=True)
    elif name == "imdb":
        imdb_archive(folder, per_folder=10)
    else:
        for file in taskdata.DOWNLOADS[name].sha256:
            (folder / file).write_bytes((FIXTURE / file).read_bytes())
    return folder


def pin(monkeypatch, name, folder):
    """Pin the SHA-256 of the fixture files in `folder` in place of the real ones."""
    for file in taskdata.DOWNLOADS[name].sha256:
        monkeypatch.setitem(taskdata.DOWNLOADS[name].sha256, file, sha256(folder / file))


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize("name", list(taskdata.DOWNLOADS))
def test_each_download_comes_from_a_mirror_folder_offline(name, offline, tmp_path, monkeypatch):
    mirror = fixtures(name, tmp_path / "mirror")
    pin(monkeypatch, name, mirror)
    monkeypatch.setenv(MIRROR, str(mirror))
    monkeypatch.setenv(URL, dead_url())  # the mirror is used, not the network
    fetched = []
    folder = taskdata.fetch(name, tmp_path / "data", log=fetched.append)
    assert folder == tmp_path / "data" / taskdata.DOWNLOADS[name].folder and len(fetched) == len(taskdata.DOWNLOADS[name].sha256)
    assert sorted(p.name for p in folder.iterdir()) == sorted(taskdata.DOWNLOADS[name].sha256)
    for file, expected in taskdata.DOWNLOADS[name].sha256.items():
        assert sha256(folder / file) == expected
    fetched.clear()
    monkeypatch.delenv(MIRROR)
    taskdata.fetch(name, tmp_path / "data", log=fetched.append)  # verified files stay: nothing is fetched again
    assert fetched == []


def test_mnist_is_downloaded_into_data_dir_when_no_folder_is_given(offline, serve, tmp_path, monkeypatch):
    server = fixtures("mnist", tmp_path / "server")
    pin(monkeypatch, "mnist", server)
    monkeypatch.setenv(URL, serve(server))
    data, run = tmp_path / "data", tmp_path / "run"
    cfg = compose("task=mnist", f"data.dir={data}", f"out_dir={run}", "model.state_size=8", "train.epochs=1",
                  "train.batch_size=10", "device=cpu")
    assert cfg.data.mnist_dir is None
    assert len(train(cfg)) == 1
    assert sorted(p.name for p in (data / "mnist").iterdir()) == sorted(taskdata.DOWNLOADS["mnist"].sha256)
    assert make_task(cfg).data_sha256 == taskdata.DOWNLOADS["mnist"].sha256  # the run record's digests: the pinned ones
    assert leftovers(data) == []


@pytest.mark.parametrize("source", ["mirror", "http"])
@pytest.mark.parametrize("name", list(taskdata.DOWNLOADS))
def test_a_file_that_is_not_the_pinned_one_is_refused_in_one_line(name, source, offline, serve, tmp_path, monkeypatch):
    """Against the real pins, every fixture is another file."""
    served = fixtures(name, tmp_path / "server")
    if source == "mirror":
        monkeypatch.setenv(MIRROR, str(served))
    elif taskdata.DOWNLOADS[name].archive:  # the UEA archive's files come zipped
        with zipfile.ZipFile(served / taskdata.DOWNLOADS[name].archive, "w") as archive:
            for file in taskdata.DOWNLOADS[name].sha256:
                archive.write(served / file, f"JapaneseVowels/{file}")
        monkeypatch.setenv(URL, serve(served))
    else:
        monkeypatch.setenv(URL, serve(served))
    with pytest.raises(DataError) as error:
        taskdata.fetch(name, tmp_path / "data", log=lambda message: None)
    message = str(error.value)
    file, expected = next(iter(taskdata.DOWNLOADS[name].sha256.items()))
    assert message.startswith(f"{file} from ") and "is not the pinned file" in message and "\n" not in message
    assert expected in message and MIRROR in message and URL in message
    assert not (tmp_path / "data").exists()  # nor the folders made for the files


def test_a_failed_download_is_one_line_naming_the_file_and_the_mirror_variable(offline, tmp_path, monkeypatch):
    url = dead_url()
    monkeypatch.setenv(URL, url)
    with pytest.raises(DataError) as error:
        taskdata.fetch("mnist", tmp_path / "data", log=lambda message: None)
    message = str(error.value)
    assert message.startswith(f"could not download train-images-idx3-ubyte.gz from {url}/train-images-idx3-ubyte.gz")
    assert f"{MIRROR}=DIR" in message and URL in message and "\n" not in message
    assert not (tmp_path / "data").exists()


def test_a_failed_download_removes_only_the_folders_it_made(offline, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(URL, dead_url())
    with pytest.raises(DataError, match="could not download"):
        taskdata.fetch("mnist", tmp_path / "data", log=lambda message: None)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_mirror_without_the_file_names_it(offline, tmp_path, monkeypatch):
    mirror = fixtures("mnist", tmp_path / "mirror")
    (mirror / "t10k-labels-idx1-ubyte.gz").unlink()
    pin(monkeypatch, "mnist", fixtures("mnist", tmp_path / "pins"))
    monkeypatch.setenv(MIRROR, str(mirror))
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte.gz is missing from the mirror {mirror} \\({MIRROR}\\)"):
        taskdata.fetch("mnist", tmp_path / "data", log=lambda message: None)


def test_the_command_line_stops_on_a_failed_download_with_one_line(offline, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), URL: dead_url(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "cerebral.train", "task=imdb", f"data.dir={tmp_path / 'data'}",
                           f"out_dir={tmp_path / 'run'}", "device=cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: could not download aclImdb_v1.tar.gz from ") and done.stderr.count("\n") == 1
    assert f"{MIRROR}=DIR" in done.stderr and not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def zip_of(folder, members):
    path = folder / "JapaneseVowels.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.write(FIXTURE / member.rsplit("/", 1)[-1], member)
    return path


def test_japanese_vowels_come_out_of_the_archives_zip_which_is_not_kept(offline, serve, tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    zip_of(server, ["JapaneseVowels/JapaneseVowels_TRAIN.ts", "JapaneseVowels/JapaneseVowels_TEST.ts"])
    pin(monkeypatch, "japanese_vowels", FIXTURE)
    monkeypatch.setenv(URL, serve(server))
    fetched = []
    folder = taskdata.fetch("japanese_vowels", tmp_path / "data", log=fetched.append)
    assert sorted(p.name for p in folder.iterdir()) == ["JapaneseVowels_TEST.ts", "JapaneseVowels_TRAIN.ts"]
    assert len(fetched) == 2 and leftovers(tmp_path / "data") == []
    assert len(seqdata.load_japanese_vowels(folder).train_y) == 9


def test_an_archive_without_a_file_or_not_a_zip_is_refused_in_one_line(offline, serve, tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    zip_of(server, ["JapaneseVowels_TRAIN.ts"])
    pin(monkeypatch, "japanese_vowels", FIXTURE)
    monkeypatch.setenv(URL, serve(server))
    with pytest.raises(DataError, match=f"JapaneseVowels.zip from .* holds no JapaneseVowels_TEST.ts; set {MIRROR}=DIR"):
        taskdata.fetch("japanese_vowels", tmp_path / "data", log=lambda message: None)
    (server / "JapaneseVowels.zip").write_text("<html>moved</html>")
    with pytest.raises(DataError, match=f"JapaneseVowels.zip from .* is not a zip archive .*{MIRROR}=DIR"):
        taskdata.fetch("japanese_vowels", tmp_path / "other", log=lambda message: None)


def test_japanese_vowels_come_from_an_installed_aeon_without_importing_it(tmp_path, monkeypatch):
    """The `pip install --no-deps aeon==1.6.0` route: its data folder is found and copied, while
    importing aeon would fail."""
    monkeypatch.delenv(MIRROR, raising=False)
    monkeypatch.setenv(URL, dead_url())
    package = tmp_path / "site" / "aeon"
    fixtures("japanese_vowels", package / "datasets" / "data" / "JapaneseVowels")
    (package / "__init__.py").write_text("raise ImportError('aeon must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pin(monkeypatch, "japanese_vowels", FIXTURE)
    folder = taskdata.fetch("japanese_vowels", tmp_path / "data", log=lambda message: None)
    assert sorted(p.name for p in folder.iterdir()) == ["JapaneseVowels_TEST.ts", "JapaneseVowels_TRAIN.ts"]
    assert "aeon" not in sys.modules


def test_archive_reviews_are_the_labelled_ones_sorted_by_path_shuffled_with_seed_0(tmp_path):
    path = imdb_archive(tmp_path, per_folder=3)
    reviews, labels = seqdata._imdb_archive_reviews(path, 8)
    paths = sorted(f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt"
                   for split in ("train", "test") for label in ("pos", "neg") for i in range(3))
    chosen = [paths[i] for i in np.random.default_rng(0).permutation(12)[:8]]
    assert [review.split()[0] for review in reviews] == chosen
    assert labels.tolist() == [int("/pos/" in p) for p in chosen]
    with pytest.raises(DataError, match="holds 12 labelled reviews, fewer than data.num_reviews=13"):
        seqdata._imdb_archive_reviews(path, 13)


def test_imdb_is_downloaded_when_no_csv_is_given_and_trains(offline, tmp_path, monkeypatch):
    mirror = fixtures("imdb", tmp_path / "mirror")
    pin(monkeypatch, "imdb", mirror)
    monkeypatch.setenv(MIRROR, str(mirror))
    run = tmp_path / "run"
    cfg = compose("task=imdb", f"data.dir={tmp_path / 'data'}", f"out_dir={run}", "data.num_reviews=20",
                  "data.seq_len=6", "task.embedding_size=4", "model.state_size=4", "train.epochs=1",
                  "train.batch_size=5", "device=cpu")
    assert cfg.data.imdb_csv is None
    assert len(train(cfg)) == 1
    assert make_task(cfg).data_sha256 == taskdata.DOWNLOADS["imdb"].sha256
