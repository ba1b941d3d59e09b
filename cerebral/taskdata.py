"""The classification tasks' downloads, fetched into `data.dir` and checked against pinned SHA-256s
as the Simpsons data is (`cerebral.data.fetch`): MNIST's four IDX files, the Stanford IMDB archive
and the UEA archive's Japanese Vowels.

`CEREBRAL_TASK_DATA_MIRROR=DIR` copies the files from DIR, where they lie under their original
names, instead of downloading (offline use); `CEREBRAL_TASK_DATA_URL` replaces the base address
of every download. Japanese Vowels also comes from an installed aeon wheel (`pip install
--no-deps aeon==1.6.0`), copied from its data folder without importing aeon, whose requirements
clash with ours.
"""

import importlib.util
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cerebral.atomic import atomic_path
from cerebral.data import Origin, check_pinned, copy_source, is_pinned, make_data_folder, no_empty_folders_left
from cerebral.data import fetch as fetch_pinned
from cerebral.errors import DataError

MIRROR_VAR, URL_VAR = "CEREBRAL_TASK_DATA_MIRROR", "CEREBRAL_TASK_DATA_URL"


@dataclass(frozen=True)
class Download:
    """One data set's files: the folder under data.dir they go to, the default base address, the
    SHA-256 pinned for each file name and what the pins are. `archive`: a zip at the base address
    that holds the files; `package_folder`: where an installed package holds them."""

    folder: str
    url: str
    sha256: dict
    pinned_as: str
    archive: str | None = None
    package_folder: str | None = None

    @property
    def origin(self):
        return Origin(self.url, MIRROR_VAR, URL_VAR, "a folder holding the files under their original names",
                      self.pinned_as)


DOWNLOADS = {
    # tensorflow-datasets 4.9.10, tensorflow_datasets/url_checksums/mnist.txt, which pins them at this address
    "mnist": Download("mnist", "https://storage.googleapis.com/cvdf-datasets/mnist/", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }, "the file tensorflow-datasets 4.9.10 pins"),
    # tensorflow-datasets 4.9.10, tensorflow_datasets/datasets/imdb_reviews/checksums.tsv
    "imdb": Download("imdb", "https://ai.stanford.edu/~amaas/data/sentiment/", {
        "aclImdb_v1.tar.gz": "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    }, "the file tensorflow-datasets 4.9.10 pins"),
    # The unequal-length files (not the _eq copies) in the aeon 1.6.0 wheel, as its RECORD lists them
    # (aeon/datasets/data/JapaneseVowels/); the zip is the UEA archive's download that aeon's loader fetches.
    "japanese_vowels": Download("japanese_vowels", "https://timeseriesclassification.com/aeon-toolkit/", {
        "JapaneseVowels_TRAIN.ts": "68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd",
        "JapaneseVowels_TEST.ts": "b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462",
    }, "the file aeon 1.6.0 ships", archive="JapaneseVowels.zip",
        package_folder="aeon/datasets/data/JapaneseVowels"),
}


def installed_folder(download):
    """The folder of an installed package that holds all of `download`'s files, found without
    importing the package; None without one."""
    if download.package_folder is None:
        return None
    package, _, inside = download.package_folder.partition("/")
    spec = importlib.util.find_spec(package)  # a top-level name: finds the package, runs none of it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / inside
    return folder if all((folder / name).is_file() for name in download.sha256) else None


def _unzip(download, folder, base_url, log):
    """Download `download.archive` from `base_url` and put each pinned file it holds into `folder`,
    verified; the zip itself is not kept."""
    origin = download.origin
    with tempfile.TemporaryFile() as archive:
        source = copy_source(download.archive, archive, None, base_url, origin)
        try:
            with zipfile.ZipFile(archive) as unpacked:
                members = {Path(m).name: m for m in unpacked.namelist()}
                for name, expected in download.sha256.items():
                    if name not in members:
                        raise DataError(f"{download.archive} from {source} holds no {name}; set {MIRROR_VAR}=DIR "
                                        f"to {origin.mirror_layout}")
                    with atomic_path(folder / name) as tmp, unpacked.open(members[name]) as member:
                        with open(tmp, "wb") as out:
                            shutil.copyfileobj(member, out)
                        check_pinned(tmp, name, f"{source} ({members[name]})", expected, origin)
                    log(f"fetched {folder / name} (sha256 {expected[:12]}...)")
        except zipfile.BadZipFile as e:
            raise DataError(f"{download.archive} from {source} is not a zip archive ({e}); fix {URL_VAR}, "
                            f"or set {MIRROR_VAR}=DIR to {origin.mirror_layout}") from e


def fetch(name, data_dir, log=print):
    """The folder under `data_dir` that holds data set `name`'s files, each verified, those missing
    fetched first: from CEREBRAL_TASK_DATA_MIRROR, else from an installed package that ships them,
    else from the base address (CEREBRAL_TASK_DATA_URL, or the data set's own)."""
    download = DOWNLOADS[name]
    folder = Path(data_dir) / download.folder
    files = {file: (file, digest) for file, digest in download.sha256.items()}
    mirror = os.environ.get(MIRROR_VAR) or installed_folder(download)
    with no_empty_folders_left(folder):
        make_data_folder(folder)
        if download.archive and mirror is None and not all(is_pinned(folder / f, d) for f, d in download.sha256.items()):
            _unzip(download, folder, os.environ.get(URL_VAR) or download.url, log)
        return fetch_pinned(folder, mirror=mirror, log=log, files=files, origin=download.origin)
