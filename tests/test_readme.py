"""README.md kept honest: short, the result first, and every command in it that does not train
runs, in a temporary copy of the repository, so that nothing committed is rewritten.

A code block that cannot run here carries a mark, an HTML comment on the line just before it:
`<!-- not run: REASON -->`, REASON one of REASONS. Every other `bash` block runs in a fresh copy
of its own (so a block may not lean on what an earlier one wrote), and every `python` block is
executed. `text` and `bibtex` blocks hold no commands. docs/PACKAGE.md (the package's page) has
its `python` blocks executed too."""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from cerebral import rundir
from cerebral.curves import published_curves
from cerebral.losslog import read_losses

README = ROOT / "README.md"
MAX_LINES = 250
HEADLINE_WITHIN = 10  # lines
EXAMPLE_WITHIN = 120  # lines
HEADLINE = re.compile(r"all five of the paper's claims\b.*?\bhold", re.I | re.S)
REASONS = {"trains", "needs CUDA", "needs the network", "runs the suite"}
RUNNABLE = {"bash", "python"}
NOT_COMMANDS = {"text", "bibtex"}
MARK = re.compile(r"^<!-- not run: (?P<reason>[^>]*?) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


@dataclass
class Block:
    line: int  # of the opening fence, from 1
    lang: str
    body: str
    mark: str | None  # the reason of its mark, None where it has none


def code_blocks(text, name="README.md"):
    """The fenced code blocks of a Markdown text, with the mark on the line before each. A line
    that looks like a mark but is not one before a block, or names no known reason, fails."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            if "not run" in lines[i] and lines[i].lstrip().startswith("<!--"):
                following = lines[i + 1] if i + 1 < len(lines) else ""
                assert FENCE.match(following), f"{name}:{i + 1}: a mark must stand on the line just before a code block"
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{name}:{i + 1}: code block never closed"
        mark = None
        if i > 0 and "not run" in lines[i - 1]:
            matched = MARK.match(lines[i - 1].strip())
            assert matched, f"{name}:{i}: a mark reads exactly <!-- not run: REASON -->, got {lines[i - 1]!r}"
            mark = matched["reason"]
            assert mark in REASONS, f"{name}:{i}: {mark!r} is no reason to leave a block out; one of {sorted(REASONS)}"
        blocks.append(Block(i + 1, fence["lang"], "\n".join(lines[i + 1:end]), mark))
        i = end + 1
    return blocks


def readme_blocks():
    return code_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_is_short_and_leads_with_the_result():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}: move detail to docs/"
    assert HEADLINE.search("\n".join(lines[:HEADLINE_WITHIN])), \
        f"the headline (all five claims hold) is not within the first {HEADLINE_WITHIN} lines"
    examples = [b for b in readme_blocks() if b.lang == "python" and b.mark is None and "CerebralLSTM(" in b.body]
    assert examples, "no runnable CerebralLSTM example in a python block"
    assert examples[0].line <= EXAMPLE_WITHIN, \
        f"the first runnable CerebralLSTM example starts at line {examples[0].line}, after line {EXAMPLE_WITHIN}"


def test_claims_are_defined_before_they_are_used():
    """C1-C5 are named first in the claims table, whose rows define them."""
    lines = README.read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines) if re.search(r"\bC[1-5]\b", line))
    assert re.match(r"\| C1\b", lines[first]), f"README.md:{first + 1} uses a claim before the table defines it"
    for k in range(1, 6):
        assert any(re.match(rf"\| C{k}: \w", line) for line in lines), f"claim C{k} has no row of its own"


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def readme_table(header_start):
    """The rows of the README table whose header line starts with `header_start`, as cell lists."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def seed_list(cell):
    """The seeds a cell names: "0", "0, 1, 2" or "0-2"."""
    seeds = []
    for part in cell.split(","):
        first, _, last = part.strip().partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def test_the_results_tables_give_the_committed_reports_numbers(data_dir):
    """The claims and runs tables of the README against results/paper/report.json and the runs' own
    files, so that a regenerated report (e.g. with more seeds) cannot leave the README behind."""
    paper = ROOT / "results" / "paper"
    report = json.loads((paper / "report.json").read_text())
    seeds = sorted({run["seed"] for runs in report["runs"].values() for run in runs})
    per_seed = report["claims_per_seed"]
    claims = readme_table("| claim |")
    assert [row[0].split(":")[0] for row in claims] == ["C1", "C2", "C3", "C4", "C5"]
    for name, published, ours, holding, _ in claims:
        claim = name.split(":")[0]
        for cell, verdict in ((published, report["claims"]["published"][claim]), (ours, report["claims"]["ours"][claim])):
            assert set(NUMBER.findall(cell)) <= set(NUMBER.findall(verdict["text"])), (claim, cell, verdict["text"])
        held = sum(v[claim]["holds"] for v in per_seed.values()) if per_seed else int(report["claims"]["ours"][claim]["holds"])
        assert holding == f"{held}/{len(seeds)}", claim
    rows = readme_table("| model | epochs |")
    assert sorted(row[0].strip("`") for row in rows) == sorted(report["runs"])
    published = published_curves(data_dir)
    for model, epochs, seed_cell, precision, final, distance, wall in rows:
        model, stats, runs = model.strip("`"), report["stats"][model.strip("`")], report["runs"][model.strip("`")]
        assert epochs == str(stats["epochs_ours"]) and seed_list(seed_cell) == [run["seed"] for run in runs], model
        assert precision == ", ".join(sorted({run["precision"] for run in runs})), model
        finals = [read_losses(paper / run["path"] / rundir.LOSSES)[-1] for run in runs]
        assert NUMBER.findall(final)[0] == f"{sum(finals) / len(finals):.5f}", model  # the mean over seeds
        assert f"({published[model][stats['epochs_ours'] - 1]:.5f})" in final, model
        assert distance == f"{stats['mean_abs_diff']:.4f}", model
        hours = sorted(sum(rundir.read_metrics(paper / run["path"])["seconds"]) / 3600 for run in runs)
        assert NUMBER.findall(wall) == list(dict.fromkeys(f"{h:.2f}" for h in (hours[0], hours[-1]))), model


DECIMAL = re.compile(r"(?<![\w.])\d+\.(\d+)")


def test_every_finding_beyond_the_paper_is_a_number_of_the_report_it_links():
    """Each decimal in a finding of the "Beyond the paper" table is a number of the REPORT.md in its
    row, rounded to the README's decimals (both roundings allowed for), so that a regenerated report
    cannot leave a finding behind."""
    rows = readme_table("| study or task |")
    assert rows
    for name, _, finding, link in rows:
        report = ROOT / re.fullmatch(r"\[REPORT\]\((.+)\)", link).group(1)
        printed = [(float(m.group(0)), len(m.group(1))) for m in DECIMAL.finditer(report.read_text())]
        for m in DECIMAL.finditer(finding):
            value, digits = float(m.group(0)), len(m.group(1))
            assert any(d >= digits and abs(v - value) <= 0.5 * 10**-digits + 0.5 * 10**-d + 1e-12 for v, d in printed), \
                f"{name}: {m.group(0)} is in no number of {report.relative_to(ROOT)}"


def test_every_block_is_runnable_or_marked_with_a_known_reason():
    blocks = readme_blocks()  # asserts each mark's form and reason
    for block in blocks:
        assert block.lang in RUNNABLE | NOT_COMMANDS, \
            f"README.md:{block.line}: a code block names its language, one of {sorted(RUNNABLE | NOT_COMMANDS)}"
        assert block.mark is None or block.lang in RUNNABLE, f"README.md:{block.line}: a mark on a block that holds no commands"
    assert any(b.lang == "bash" and b.mark is None for b in blocks), "no README command runs in the suite"


def runnable_blocks(lang, paths):
    """pytest params of the unmarked blocks of `lang`; a file whose blocks cannot be read gives one
    param that fails with the reason (the other tests name the fault; collection goes on)."""
    for path in paths:
        try:
            blocks = code_blocks(path.read_text(encoding="utf-8"), path.name)
        except AssertionError as e:
            yield pytest.param(path, str(e), id=f"{path.name}:unreadable")
            continue
        for block in blocks:
            if block.lang == lang and block.mark is None:
                yield pytest.param(path, block, id=f"{path.name}:{block.line}")


def python_blocks():
    return runnable_blocks("python", (README, ROOT / "docs" / "PACKAGE.md"))


@pytest.mark.parametrize("path,block", list(python_blocks()))
def test_the_python_examples_run(path, block, tmp_path, monkeypatch):
    assert isinstance(block, Block), block
    monkeypatch.chdir(tmp_path)  # anything an example writes lands here
    exec(compile(block.body, f"{path.name}:{block.line}", "exec"), {"__name__": "__readme__"})


def copy_of_the_repository(destination, data_dir):
    """The checkout's files as git sees them (tracked and untracked, not ignored), with data/
    linked to the fetched data and .venv/ standing for the running environment: its entries
    linked, its set-up stamp fresh, so that `make` neither installs nor touches the real one."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if name.startswith(("data/", ".venv/")) or not source.is_file():
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / name)
    (destination / "data").symlink_to(Path(data_dir).resolve(), target_is_directory=True)
    venv = Path(sys.prefix)
    (destination / ".venv").mkdir()
    for entry in venv.iterdir():
        if entry.name != ".installed":
            (destination / ".venv" / entry.name).symlink_to(entry)
    (destination / ".venv" / ".installed").touch()
    return destination


@pytest.mark.parametrize("path,block", list(runnable_blocks("bash", [README])))
def test_the_readme_commands_run_in_a_copy(path, block, tmp_path, data_dir):
    assert isinstance(block, Block), block
    if not (Path(sys.prefix) / "bin" / "activate").exists():
        pytest.skip("the README's commands run in the project's virtual environment (make setup)")
    copy = copy_of_the_repository(tmp_path / "repo", data_dir)
    env = {**os.environ, "PATH": f"{copy / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(copy),
           "PIP_NO_INDEX": "1", "PIP_DRY_RUN": "1",  # a pip command left unmarked changes nothing, and fails offline
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}  # the copy's kernel build, not kept
    env.pop("CEREBRAL_RUNS", None)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f"{path.name}:{block.line}: the block failed (exit {done.returncode}):\n"
                                  f"{block.body}\n--- output ---\n{(done.stdout + done.stderr)[-3000:]}")
