"""A non-editable install works outside the checkout: the wheel holds the presets and the figure
scripts, and every README command runs from a folder that is not the checkout.

The wheel is built from a copy of the project's files (so nothing is written into the checkout)
and installed with ``--no-deps`` into a fresh virtual environment that sees this environment's
dependencies through a ``.pth`` line naming a folder of links to them: the links leave out this
environment's own mdgl-analysis (its editable finder and ``.pth`` file, its metadata), so the
package can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from mdgl_analysis.cli import FIGURE_SCRIPTS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "runs" / "configs"
# the demo preset shortened to seconds: 4 iterations of a 150 ms trial, batch 8, 2 trials recorded
SHORT_DEMO = [
    "--iterations",
    "4",
    "--no-progress",
    *("--set", "record.every=2", "--set", "record.trials=0-1", "--set", "train.val_every=2"),
    *("--set", "train.batch=8", "--set", "train.val_batch=8", "--set", "train.compare_every=2"),
    *("--set", "task.cue_ms=10", "--set", "task.gap_ms=5", "--set", "task.delay_ms=50"),
    *("--set", "task.recall_ms=30"),
]


def test_pyproject_lists_every_package_and_maps_the_presets_to_runs_configs():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "mdgl_analysis").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == folders | {"mdgl_analysis.presets"}
    assert setuptools["package-dir"] == {"mdgl_analysis.presets": "runs/configs"}
    assert setuptools["package-data"]["mdgl_analysis.presets"] == ["*.toml"]
    assert not (ROOT / "mdgl_analysis" / "presets").exists()  # one copy: runs/configs/


# ------------------------------------------------------------------------------------------------
# where the code of a run came from: run.json's git and install


def test_this_checkout_records_an_editable_install_and_its_commit():
    from mdgl_analysis.training.runs import git_info, install_info, source_checkout

    assert source_checkout() == ROOT  # the suite runs on `make install`'s editable install
    assert install_info() == {"kind": "editable", "version": "0.2.0", "path": str(ROOT)}
    git = git_info()
    assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)


OLD_RUN_JSON = {  # a run.json of version 0.2.0, before the installation was recorded
    "status": "completed",
    "rule": "bptt",
    "seed": 1,
    "iteration": 2,
    "iterations": 2,
    "started": "2026-01-01T00:00:00+00:00",
    "ended": "2026-01-01T00:01:00+00:00",
    "git": {"commit": "0" * 40, "dirty": False},
    "device": "cpu",
}


@pytest.mark.parametrize(
    ("install", "lines"),
    [
        (None, ["git       " + "0" * 40]),
        (
            {"kind": "installed", "version": "0.2.0", "path": "/v/site-packages"},
            [
                "git       none (not run from a git checkout)",
                "package   mdgl-analysis 0.2.0, installed distribution in /v/site-packages",
            ],
        ),
    ],
)
def test_mdgl_info_names_the_code_of_old_and_new_run_folders(install, lines, tmp_path):
    from mdgl_analysis import cli
    from mdgl_analysis.config import dumps, preset
    from mdgl_analysis.training.runs import RunFolder

    meta = dict(OLD_RUN_JSON)
    if install is not None:
        meta |= {"install": install, "git": {"commit": None, "dirty": None}}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (tmp_path / "config.toml").write_text(dumps(preset("demo")))
    (tmp_path / "metrics.csv").write_text("iteration,split,name,value\n")
    text = cli.describe(RunFolder(tmp_path)).splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("git"))
    assert text[start : start + len(lines)] == lines
    assert not text[start + len(lines)].startswith("package")


# ------------------------------------------------------------------------------------------------
# the wheel, installed into a fresh environment


def project_copy(dest: Path) -> Path:
    """The files a wheel is built from, copied to ``dest`` (setuptools writes build/ there)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "mdgl_analysis", dest / "mdgl_analysis", ignore=ignore)
    (dest / "runs").mkdir()
    shutil.copytree(CONFIGS, dest / "runs" / "configs", ignore=ignore)
    return dest


def dependency_links(dest: Path) -> Path:
    """A folder of links to everything in this environment's site-packages except its own
    mdgl-analysis (package, metadata, editable finder and ``.pth`` files)."""
    dest.mkdir()
    paths = sysconfig.get_paths()
    for site in dict.fromkeys([paths["purelib"], paths["platlib"]]):
        for entry in Path(site).iterdir():
            name = entry.name.lower()
            if name.startswith(("mdgl_analysis", "__editable__", "__pycache__")):
                continue
            if name.endswith(".pth") or (dest / entry.name).exists():
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


class Installed:
    """The fresh environment: run commands in a folder outside the checkout."""

    def __init__(self, venv: Path, work: Path, wheel: Path, seconds: dict[str, float]):
        self.venv, self.work, self.wheel, self.seconds = venv, work, wheel, seconds
        self.python = venv / "bin" / "python"
        self.env = clean_env(venv)

    def run(self, *argv: str | Path, label: str, timeout: float = 120) -> str:
        start = time.perf_counter()
        done = subprocess.run(
            [str(a) for a in argv],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.seconds[label] = time.perf_counter() - start
        assert done.returncode == 0, f"{label}: {done.stderr.strip()[-2000:]}"
        return done.stdout

    def mdgl(self, *args: str | Path, label: str) -> str:
        return self.run(self.venv / "bin" / "mdgl", *args, label=label)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(dist), str(project_copy(tmp_path_factory.mktemp("src")))],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("mdgl_analysis-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": venv, "platbase": venv}))
    (site / "_dependencies.pth").write_text(f"{dependency_links(tmp / 'dependencies')}\n")
    env = clean_env(venv)
    subprocess.run(  # pip itself comes from the dependencies
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    work = tmp / "work"
    work.mkdir()
    seconds["build and install"] = time.perf_counter() - start
    yield Installed(venv, work, wheel, seconds)
    steps = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
    print(f"\ntest_install: {sum(seconds.values()):.1f} s: {steps}")


@pytest.mark.slow
def test_the_wheel_holds_every_preset_and_every_figure_script(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for config in CONFIGS.glob("*.toml"):
        assert f"mdgl_analysis/presets/{config.name}" in names
    for script in FIGURE_SCRIPTS:
        assert f"mdgl_analysis/analysis/figures/{script}.py" in names
    assert not any(name.startswith(("runs/", "tests/")) for name in names)


@pytest.mark.slow
def test_the_package_presets_and_figures_come_from_the_installed_wheel(installed):
    code = (
        "import importlib.resources, json, sys, mdgl_analysis\n"
        "import mdgl_analysis.analysis.figures.recorded_trial as fig\n"
        "from mdgl_analysis import config\n"
        "from mdgl_analysis.training.runs import git_info, install_info\n"
        "print(json.dumps({'package': mdgl_analysis.__file__, 'figure': fig.__file__,\n"
        "    'presets': str(importlib.resources.files('mdgl_analysis.presets')),\n"
        "    'names': list(config.PRESETS), 'git': git_info(), 'install': install_info(),\n"
        "    'editable': [m for m in sys.modules if 'editable' in m]}))\n"
    )
    found = json.loads(installed.run(installed.python, "-c", code, label="imports"))
    site = installed.venv.resolve()
    for key in ("package", "figure", "presets"):
        assert Path(found[key]).resolve().is_relative_to(site), (key, found[key])
        assert not Path(found[key]).resolve().is_relative_to(ROOT), (key, found[key])
    assert found["names"] == ["paper", "demo", "fig3c", "neurogym", "pattern"]
    assert found["git"] == {"commit": None, "dirty": None}
    assert found["install"]["kind"] == "installed" and found["install"]["version"] == "0.2.0"
    assert found["editable"] == []


@pytest.mark.slow
def test_version_and_presets_work_outside_the_checkout(installed):
    assert installed.mdgl("--version", label="--version").strip() == "mdgl-analysis 0.2.0"
    listing = installed.mdgl("presets", label="presets")
    for name in ("paper", "demo", "fig3c", "neurogym", "pattern"):
        assert any(line.split()[:1] == [name] for line in listing.splitlines()), name
    text = installed.mdgl("presets", "fig3c", label="presets fig3c")
    assert "compare_every = 10" in text and "description = " in text


@pytest.fixture(scope="module")
def demo_run(installed):
    installed.mdgl("train", "--preset", "demo", *SHORT_DEMO, "--out", "demo", label="train demo")
    return installed.work / "demo"


@pytest.mark.slow
def test_a_short_demo_run_trains_verifies_and_names_the_installed_package(installed, demo_run):
    meta = json.loads((demo_run / "run.json").read_text())
    assert meta["status"] == "completed"
    assert meta["git"] == {"commit": None, "dirty": None}
    assert meta["install"]["kind"] == "installed"
    assert Path(meta["install"]["path"]).resolve().is_relative_to(installed.venv.resolve())
    info = installed.mdgl("info", demo_run, label="info")
    assert "mdgl-analysis 0.2.0, installed distribution in" in info
    assert "OK: worst relative error" in installed.mdgl("verify", demo_run, label="verify")


@pytest.mark.slow
def test_the_figures_of_the_run_are_drawn_by_the_installed_scripts(installed, demo_run):
    installed.mdgl("figures", demo_run, "--out", "figures", label="figures")
    drawn = {p.stem for p in (installed.work / "figures").glob("*.png")}
    assert {"fig3c_learning_curves", "recorded_trial"} <= drawn
    installed.run(
        installed.python,
        "-m",
        "mdgl_analysis.analysis.figures.recorded_trial",
        demo_run,
        "--out",
        "trial",
        label="python -m recorded_trial",
    )
    assert (installed.work / "trial" / "recorded_trial.png").stat().st_size > 0


@pytest.mark.slow
def test_a_dry_run_of_the_fig3c_preset_creates_nothing(installed):
    before = sorted(installed.work.rglob("*"))
    text = installed.mdgl(
        "train", "--preset", "fig3c", "--dry-run", "--iterations", "4", label="dry run fig3c"
    )
    assert "compare_every = 10" in text
    assert sorted(installed.work.rglob("*")) == before
