"""The repository carries its own evidence: no tracked file leans on ../shared (but CI's data
mirror), every citation of docs/ points to a section that exists, and every relative link of the
documentation reaches a file, and a heading where it names one."""

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


LINKED_DOCS = ["README.md", "docs/*.md", "results/README.md", "results/paper/NOTES.md", "results/studies/NOTES.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")


def github_anchors(text):
    """The fragments GitHub gives the headings of a Markdown text: lower case, punctuation other
    than hyphens and underscores dropped, spaces as hyphens, a repeated one numbered -1, -2, ..."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", strip_code_blocks(text), flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return anchors


def strip_code_blocks(text):
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)


def test_every_link_to_a_section_resolves():
    """Every relative link and image in the README, docs/*.md, results/README.md and
    results/paper/NOTES.md points to a file that exists, and its #anchor to a heading there."""
    files = sorted({path for pattern in LINKED_DOCS for path in ROOT.glob(pattern)})
    assert ROOT / "README.md" in files and len(files) > 5
    broken, checked = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        for target in LINK.findall(strip_code_blocks(text)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            checked += 1
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not linked.is_relative_to(ROOT):
                broken.append(f"{where}: outside the repository")
                continue
            if not linked.exists():
                broken.append(f"{where}: no such file")
                continue
            if anchor and (linked.suffix != ".md" or anchor not in github_anchors(linked.read_text(encoding="utf-8"))):
                broken.append(f"{where}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert checked > 50, "hardly any link found: the pattern no longer matches how the docs link"
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize("name", ["LICENSE"])
def test_the_licence_is_mit_as_pyproject_says(name):
    assert "MIT License" in (ROOT / name).read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
