"""The repository carries its own evidence: no tracked file leans on ../shared (but CI's data
mirror), and every citation of docs/ points to a section that exists."""

import re
import subprocess

import pytest
from conftest import ROOT

ALLOWED = {".ci/run"}  # CI copies the data from the offline mirror beside the checkout


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".yaml", ".toml", ".txt", ".ipynb", ".cfg", ""} and path.is_file():
            yield name, path.read_text(encoding="utf-8", errors="replace")


def test_no_tracked_file_refers_to_shared_outside_ci():
    offenders = [name for name, text in tracked_text_files()
                 if name not in ALLOWED and name != "tests/test_docs.py" and re.search(r"\.\./shared|shared/reference", text)]
    assert offenders == []


def test_every_docs_citation_names_an_existing_section():
    headings = {}
    for doc in ("PROTOCOL", "MODELS"):
        text = (ROOT / "docs" / f"{doc}.md").read_text(encoding="utf-8")
        headings[doc] = set(re.findall(r"^## ([PM]\d+)\.", text, flags=re.M))
    assert headings["PROTOCOL"] and headings["MODELS"]
    cited = [(name, doc, section) for name, text in tracked_text_files()
             for doc, section in re.findall(r"docs/(PROTOCOL|MODELS)\.md,? §?([PM]\d+)", text)]
    assert cited, "no citation found: the pattern no longer matches how the code cites docs/"
    missing = [(name, f"docs/{doc}.md {section}") for name, doc, section in cited if section not in headings[doc]]
    assert missing == []


@pytest.mark.parametrize("name", ["LICENSE"])
def test_the_licence_is_mit_as_pyproject_says(name):
    assert "MIT License" in (ROOT / name).read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
