"""The documentation's code runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mdgl_analysis.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# the programs of the README's shell lines that are not mdgl (not checked here)
NOT_MDGL = {"make", "python", "export", "h5dump", "ncdump", "tensorboard", "pip"}


def python_blocks(path: Path) -> str:
    return "\n\n".join(fenced(path, "python"))


def fenced(path: Path, *languages: str) -> list[str]:
    """The code of every fenced block of ``path`` in one of ``languages``, in order."""
    pattern = r"^```(?:" + "|".join(languages) + r")[ \t]*\n(.*?)^```"
    return re.findall(pattern, path.read_text(), flags=re.S | re.M)


def run_script(code: str, cwd: Path, name: str) -> subprocess.CompletedProcess:
    script = cwd / name
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.slow
def test_the_api_page_example_runs_as_written(tmp_path):
    code = python_blocks(DOCS / "api.md")
    assert "m.train(" in code and "m.resume(" in code and "run.verify()" in code
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed" in done.stdout
    assert (tmp_path / "runs" / "flip-eprop" / "records" / "iter_000005.h5").is_file()


@pytest.mark.slow
def test_the_tutorial_runs_as_written_and_makes_what_it_says(tmp_path):
    code = python_blocks(DOCS / "tutorial.md")
    assert "run.verify()" in code and "time_alignment" in code and "gradient_alignment" in code
    done = run_script(code, tmp_path, "tutorial.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified: 2 records, every check passed" in done.stdout
    run = tmp_path / "runs" / "tutorial-mdgl"
    assert [p.name for p in sorted((run / "records").glob("*.h5"))] == [
        "iter_000000.h5",
        "iter_000005.h5",
    ]
    for figure in ("tutorial-alignment.png", "tutorial-learning-curve.png"):
        png = tmp_path / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


# What the README's Python snippets read: a run recorded at iteration 100 (runs/mdgl-rec) and a
# sweep folder of two MDGL runs (runs/sweep-fig3c); the demo preset shrunk to a few seconds.
README_FIXTURES = """
import mdgl_analysis as m

small = {"task.n_cues": 3, "task.delay_ms": 50, "task.recall_ms": 50, "train.batch": 2,
         "train.val_batch": 2, "train.compare_every": 0, "record.trials": "0-1"}
m.train("demo", rule="mdgl", iterations=101, out="runs/mdgl-rec",
        set={**small, "train.val_every": 50, "record.every": 0, "record.iterations": "100"})
for seed in (1, 2):
    m.train("demo", rule="mdgl", seed=seed, iterations=6, out=f"runs/sweep-fig3c/mdgl-s{seed}",
            set={**small, "train.val_every": 1, "record.every": 0})
"""


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    done = run_script(README_FIXTURES, folder, "make_fixtures.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "runs" / "mdgl-rec" / "records" / "iter_000100.h5").is_file()
    return folder


README_PYTHON = fenced(README, "python")


def snippet_id(number: int, code: str) -> str:
    first = next(line for line in code.splitlines() if line.strip())
    return f"{number + 1}: {first[:40]}"


def test_the_readme_has_python_snippets_to_run():
    assert len(README_PYTHON) >= 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "number, code",
    list(enumerate(README_PYTHON)),
    ids=[snippet_id(n, c) for n, c in enumerate(README_PYTHON)],
)
def test_every_python_snippet_of_the_readme_runs_as_written(number, code, readme_folder):
    done = run_script(code, readme_folder, f"readme_snippet_{number + 1}.py")
    assert done.returncode == 0, f"README snippet:\n{code}\n{done.stderr[-3000:]}"


def readme_commands() -> list[list[str]]:
    """Every command of the README's shell blocks, split into words (continued lines joined,
    comments dropped, ``&&``/``;``/``|`` separating commands)."""
    commands = []
    for block in fenced(README, "sh", "bash", "shell", "console"):
        for line in block.replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in shlex.split(line, comments=True):
                if word in {"&&", "||", ";", "|"}:
                    commands.append(command)
                    command = []
                else:
                    command.append(word)
            commands.append(command)
    return [c for c in commands if c]


def test_every_mdgl_command_line_of_the_readme_parses(capsys):
    commands = readme_commands()
    mdgl = [c for c in commands if c[0] == "mdgl"]
    others = {c[0] for c in commands if c[0] != "mdgl"}
    assert others <= NOT_MDGL, f"README shell lines that are neither mdgl nor known: {others}"
    assert len(mdgl) >= 10
    wrong = []
    for command in mdgl:
        try:
            build_parser().parse_args(command[1:])
        except SystemExit:
            wrong.append(f"{shlex.join(command)}: {capsys.readouterr().err.strip()}")
    assert not wrong, "\n".join(wrong)
    with pytest.raises(SystemExit):  # the check can fail: an option that does not exist
        build_parser().parse_args(["train", "--preset", "demo", "--no-such-option", "1"])


def test_every_link_of_the_docs_is_a_file_of_the_repository_or_a_public_url():
    pages = sorted(DOCS.rglob("*.md"))
    links = [(page, target) for page in pages for target in markdown_links(page.read_text())]
    assert any(target == "tutorial.md" for _, target in links)
    wrong = []
    for page, target in links:
        if re.match(r"https?://(?!localhost|127\.|0\.0\.0\.0|10\.|192\.168\.)", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if "://" in target or not path.is_relative_to(ROOT) or not path.exists():
            wrong.append(f"{page.relative_to(ROOT)}: {target}")
    assert not wrong, "\n".join(wrong)


def markdown_links(text: str) -> list[str]:
    """The targets of the Markdown links and images of ``text`` outside code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)", text)
