"""A run is a folder (design section 4): resolved config, run.json, metrics.csv, checkpoints/,
records/ and manifest.json.

Everything here writes atomically (temporary file in the same folder, fsync, ``os.replace``), so a
run killed at any moment leaves every file either in its old or its new complete state. Every
checkpoint and record gets its SHA-256 in ``manifest.json`` *before* it takes its final name, so
every published file has a checksum to be checked against (:meth:`RunFolder.check`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import fcntl
import io
import json
import os
import pickle
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mdgl_analysis import config as config_mod
from mdgl_analysis.config import Config
from mdgl_analysis.plugins import file_of, is_file_name
from mdgl_analysis.recording.schema import LOCK, MANIFEST, sha256_of

CONFIG = "config.toml"
RUN_JSON = "run.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
METRICS_HEADER = ("iteration", "split", "name", "value")
META_KEYS = ("status", "rule", "seed", "iteration", "iterations", "started", "ended", "git")
"""Keys every run.json has (readers rely on them)."""
STATUSES = ("running", "completed", "failed", "interrupted", "diverged")


def now() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def write_tmp(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path.tmp`` (fsynced); the temporary file is removed if that fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        raise _named(err, tmp) from err
    return tmp


def _named(err: BaseException, path: Path) -> BaseException:
    """``err``, naming ``path`` when it is an OSError that names no file (a failed write)."""
    if isinstance(err, OSError) and not err.filename:
        return OSError(err.errno, err.strerror or str(err), str(path))
    return err


def replace_file(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; ``tmp`` is removed if that fails."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: ``path`` holds its old or
    its new contents, and no temporary file is left, whatever fails."""
    replace_file(write_tmp(path, data), path)


def _git(root: Path, *args: str) -> str:
    """The output of ``git ARGS`` in ``root`` (OSError, CalledProcessError when it fails)."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def source_checkout() -> Path | None:
    """The git checkout this package runs from: the folder holding ``mdgl_analysis/`` when it is
    the top of a git work tree (a clone, installed editable or not); None for an installed copy,
    even one in a virtual environment inside some git repository's folder."""
    root = Path(__file__).resolve().parents[2]
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel")).resolve()
    except (OSError, subprocess.CalledProcessError):
        return None
    return root if top == root else None


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the git checkout this package runs from (None outside one)."""
    root = source_checkout()
    if root is None:
        return {"commit": None, "dirty": None}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no") != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


INSTALL_KINDS = ("editable", "installed", "source")


def install_info() -> dict[str, Any]:
    """How this package is installed: ``kind`` (``editable``: an editable install of a source
    tree, the git commit in ``run.json``'s ``git``; ``installed``: an installed distribution,
    a wheel; ``source``: imported from a source tree that is not installed), the package
    ``version`` and ``path``, the folder that holds ``mdgl_analysis/``."""
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    from mdgl_analysis import __version__

    package = Path(__file__).resolve().parents[1]
    root = package.parent
    kind = "source"
    # the distribution whose files are the running package (a source tree's stale *.egg-info
    # on sys.path, or another environment's install, is not)
    for dist in metadata.distributions(name="mdgl-analysis"):
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")  # PEP 610
        except json.JSONDecodeError:
            direct = {}
        if direct.get("dir_info", {}).get("editable"):
            if Path(unquote(urlparse(str(direct.get("url", ""))).path)).resolve() == root:
                kind = "editable"
                break
        elif dist.read_text("RECORD") is not None and (
            Path(str(dist.locate_file("mdgl_analysis/__init__.py"))).resolve()
            == package / "__init__.py"
        ):
            kind = "installed"
            break
    return {"kind": kind, "version": __version__, "path": str(root)}


def versions() -> dict[str, str]:
    from mdgl_analysis import __version__

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mdgl_analysis": __version__,
    }
    for name in ("numpy", "h5py", "xarray", "dask"):
        with contextlib.suppress(ImportError):
            out[name] = __import__(name).__version__
    return out


def task_info(cfg: Config) -> dict[str, Any]:
    """What analyses need to know of the task without building it: name, loss and metric,
    sizes, named epochs and input channel names."""
    from mdgl_analysis.network.readout import METRICS
    from mdgl_analysis.recording.writer import epochs_of, input_names_of

    task = config_mod.task_of(cfg)
    info = {"file_sha256": sha256_of(task_file(cfg.task.name))} if task_file(cfg.task.name) else {}
    return {
        **info,
        "name": cfg.task.name,
        "loss": task.loss,
        "metric": METRICS[task.loss],
        "n_in": task.n_in,
        "n_out": task.n_out,
        "n_steps": task.n_steps,
        "dt_ms": cfg.network.dt,
        "epochs": epochs_of(task),
        "input_names": input_names_of(task, task.n_in),
    }


def rule_files(cfg: Config) -> list[str]:
    """The rules of ``cfg`` that a user's file gives (``FILE.py:FUNCTION``), trained or compared."""
    names = [cfg.train.rule, *config_mod.compare_rules(cfg)]
    return [n for i, n in enumerate(names) if is_file_name(n) and n not in names[:i]]


def task_file(name: str) -> Path | None:
    """The Python file of a ``FILE.py:CLASS`` task name (None for a built-in task)."""
    return file_of(name)


_NONE = type(None)
_META_TYPES: dict[str, tuple[tuple[type, ...], str]] = {  # key -> (types, what is allowed)
    "status": ((str,), f"one of {', '.join(STATUSES)}"),
    "rule": ((str,), "a rule name"),
    "seed": ((int,), "an integer"),
    "iteration": ((int,), "an integer >= 0"),
    "iterations": ((int,), "an integer >= 0"),
    "started": ((str, _NONE), "a time or null"),
    "ended": ((str, _NONE), "a time or null"),
    "git": ((dict,), 'an object {"commit": ..., "dirty": ...}'),
    "install": ((dict,), 'an object {"kind": ..., "version": ..., "path": ...}'),
    "pid": ((int, _NONE), "a process id or null"),
    "host": ((str, _NONE), "a host name or null"),
    "device": ((str,), "a device name"),
    "resumed": ((list,), "a list"),
    "task": ((dict, _NONE), "an object or null"),
    "rule_files": ((dict,), "an object {rule: SHA-256 of its file}"),
    "diverged": ((dict, _NONE), "an object or null"),
    "error": ((str, _NONE), "a message or null"),
}


def _meta_value_ok(key: str, value: Any, types: tuple[type, ...]) -> bool:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return False
    if key == "status":
        return value in STATUSES
    if key in ("iteration", "iterations"):
        return value >= 0
    if key == "git":
        return isinstance(value.get("commit"), str | _NONE) and isinstance(
            value.get("dirty"), bool | _NONE
        )
    if key == "install":  # absent from run.json files written before it was recorded
        return value.get("kind") in INSTALL_KINDS and isinstance(value.get("version"), str)
    return True


class RunFolderError(ValueError):
    """A folder is not a readable run folder."""


class RunFolder:
    """Paths and atomic writers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / CONFIG)
    json_path = property(lambda self: self.path / RUN_JSON)
    metrics_path = property(lambda self: self.path / METRICS)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINTS)
    manifest_path = property(lambda self: self.path / MANIFEST)
    lock_path = property(lambda self: self.path / LOCK)

    # -- creation and metadata ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        cfg: Config,
        command: list[str],
        device: str,
        state: dict[str, Any] | None = None,
    ) -> RunFolder:
        """Make the folder, with the checkpoint ``state`` when given (its parent may exist, the
        folder itself must not). It is built under a temporary name and renamed when complete,
        so a run killed while it is made leaves no folder (and can be trained again)."""
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        building = final.with_name(f".{final.name}.creating")
        shutil.rmtree(building, ignore_errors=True)  # left by a killed creation
        if final.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final))
        building.mkdir()
        run = cls(building)
        try:
            run._populate(cfg, command, device, final.name)
            if state is not None:
                run.save_checkpoint(state)
            os.rename(building, final)
        except BaseException:  # a half-made folder holds nothing worth keeping
            shutil.rmtree(building, ignore_errors=True)
            raise
        return cls(final)

    def _populate(self, cfg: Config, command: list[str], device: str, run_id: str) -> None:
        run = self
        run.checkpoint_dir.mkdir()
        run.write_config(cfg)
        atomic_write(run.metrics_path, ",".join(METRICS_HEADER) + "\n")
        run._write_manifest({})
        run.write_meta(
            {
                "id": run_id,
                "status": "running",
                "created": now(),
                "started": now(),
                "ended": None,
                "iteration": 0,
                "iterations": cfg.train.iterations,
                "rule": cfg.train.rule,
                "seed": cfg.run.seed,
                "task": task_info(cfg),
                "rule_files": {name: sha256_of(file_of(name)) for name in rule_files(cfg)},
                "device": device,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": command,
                "git": git_info(),
                "install": install_info(),
                "versions": versions(),
                "error": None,
                "resumed": [],
            }
        )

    def exists(self) -> bool:
        return self.json_path.is_file() and self.config_path.is_file()

    def write_config(self, cfg: Config) -> None:
        atomic_write(self.config_path, config_mod.dumps(cfg))

    def config(self, resolve_task: bool = False) -> Config:
        """The run's resolved config; its task is resolved (a task in a user's file imported)
        only when ``resolve_task`` says so: reading a run never runs code. Keys the saved file
        lacks (it predates them) get the value the run was made with (config.LEGACY)."""
        return config_mod.load_saved(self.config_path, resolve_task=resolve_task)

    def meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{str(self.json_path)!r} is not valid JSON: {err}") from None
        if not isinstance(meta, dict) or "status" not in meta:
            raise RunFolderError(f"{str(self.json_path)!r} is not a run description")
        missing = [key for key in META_KEYS if key not in meta]
        if missing:
            raise RunFolderError(
                f"{str(self.json_path)!r} lacks {', '.join(missing)}: not a complete run "
                "description"
            )
        for key, (types, allowed) in _META_TYPES.items():
            if key in meta and not _meta_value_ok(key, meta[key], types):
                shown = repr(meta[key])
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise RunFolderError(
                    f"{str(self.json_path)!r}: {key} = {shown} is not allowed: {allowed} (a "
                    "damaged run description)"
                )
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.json_path, json.dumps(meta, indent=2) + "\n")

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.meta()
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def mark_failed(self, error: str) -> None:
        """Say ``failed`` and why in ``run.json``, whatever the disk: when the atomic rewrite
        fails (a full disk has no room for the temporary file) the file is rewritten in place,
        within the blocks it already holds."""
        meta = self.meta()
        meta.update(status="failed", ended=now(), error=error)
        try:
            self.write_meta(meta)
        except OSError:
            data = (json.dumps(meta, indent=2) + "\n").encode()
            with open(self.json_path, "r+b") as f:
                f.write(data)
                f.truncate(len(data))
                f.flush()
                os.fsync(f.fileno())

    # -- metrics -----------------------------------------------------------------------------
    def append_metrics(self, rows: Iterable[tuple[int, str, str, float]]) -> None:
        """Append rows ``(iteration, split, name, value)`` and flush them to disk."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            (it, split, name, repr(float(value))) for it, split, name, value in rows
        )
        with open(self.metrics_path, "a") as f:
            size = f.tell()
            try:
                f.write(buf.getvalue())
                f.flush()
            except BaseException as err:  # no partial line left behind
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise _named(err, self.metrics_path) from err

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every row of ``metrics.csv``; RunFolderError naming the file and line when one is not
        ``iteration,split,name,value``."""
        path = str(self.metrics_path)
        try:
            return self._read_metrics()
        except FileNotFoundError:
            raise RunFolderError(
                f"{path!r} is missing: a run folder keeps its metrics there"
            ) from None
        except UnicodeDecodeError as err:
            raise RunFolderError(
                f"{path!r} is not text: byte {err.start} is not UTF-8 (a damaged file)"
            ) from None
        except csv.Error as err:
            raise RunFolderError(f"{path!r} is not CSV: {err}") from None
        except OSError as err:
            raise RunFolderError(f"{path!r} cannot be read: {err.strerror or err}") from None

    def _read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        with open(self.metrics_path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != METRICS_HEADER:
                raise RunFolderError(
                    f"{str(self.metrics_path)!r}: header {reader.fieldnames!r}, expected "
                    f"{','.join(METRICS_HEADER)}"
                )
            for row in reader:
                try:
                    rows.append(
                        {**row, "iteration": int(row["iteration"]), "value": float(row["value"])}
                    )
                except (TypeError, ValueError):
                    raise RunFolderError(
                        f"{str(self.metrics_path)!r} line {reader.line_num} is not "
                        f"iteration,split,name,value: {row!r}"
                    ) from None
        return rows

    def truncate_metrics(self, before: int) -> None:
        """Keep only rows with ``iteration < before`` (rows newer than a checkpoint)."""
        with open(self.metrics_path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        keep = [lines[0]] + [
            line for line in lines[1:] if line.strip() and int(line.split(",", 1)[0]) < before
        ]
        atomic_write(self.metrics_path, "".join(keep))

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoint_dir / f"ckpt_{iteration:06d}.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        path = self.checkpoint_path(state["iteration"])
        buf = io.BytesIO()
        torch.save(state, buf)
        self.publish(write_tmp(path, buf.getvalue()), path)
        return path

    # -- checksums ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        """``relative path -> {"sha256", "bytes"}`` of every published checkpoint and record
        (empty for a run made before manifests)."""
        if not self.manifest_path.is_file():
            return {}
        try:
            files = json.loads(self.manifest_path.read_text())["files"]
            assert isinstance(files, dict)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError):
            raise RunFolderError(
                f"{str(self.manifest_path)!r} is not a manifest of checksums"
            ) from None
        return files

    def _write_manifest(self, files: dict[str, dict[str, Any]]) -> None:
        atomic_write(self.manifest_path, json.dumps({"files": files}, indent=1) + "\n")

    def publish(self, tmp: Path, path: Path) -> None:
        """Give the complete file ``tmp`` its final name ``path``, its checksum entered first;
        ``tmp`` is removed if either step fails."""
        try:
            files = self.manifest()
            key = str(path.relative_to(self.path))
            files[key] = {"sha256": sha256_of(tmp), "bytes": tmp.stat().st_size}
            self._write_manifest(files)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        replace_file(tmp, path)

    def forget(self, paths: Iterable[Path] = ()) -> None:
        """Delete ``paths`` and drop their entries, and those of files that are gone (a
        publication a kill interrupted), from the manifest."""
        for path in paths:
            path.unlink(missing_ok=True)
        files = self.manifest()
        kept = {k: v for k, v in files.items() if (self.path / k).is_file()}
        if kept != files:
            self._write_manifest(kept)

    def check(self, path: Path, files: dict[str, dict[str, Any]] | None = None) -> str | None:
        """Why ``path`` does not match its checksum, or None when it does (or the run predates
        manifests). ``files``: the manifest, when the caller has read it already."""
        if files is None:
            if not self.manifest_path.is_file():
                return None
            files = self.manifest()
        entry = files.get(str(path.relative_to(self.path)))
        if entry is None:
            return f"no checksum in {MANIFEST}"
        if path.stat().st_size != entry.get("bytes") or sha256_of(path) != entry.get("sha256"):
            return f"its SHA-256 differs from the one in {MANIFEST} (changed after it was written)"
        return None

    def check_files(self) -> tuple[list[str], list[str]]:
        """``(problems, notes)`` of every checkpoint and record against the manifest."""
        problems, notes = [], []
        if not self.manifest_path.is_file():
            return [], [f"no {MANIFEST}: a run made before checksums, files not checked"]
        files = self.manifest()
        listed = set(files)
        present = [*self.checkpoints(), *sorted((self.path / "records").glob("iter_*.h5"))]
        for path in present:
            problem = self.check(path, files)
            if problem:
                problems.append(f"{path.relative_to(self.path)}: {problem}")
            listed.discard(str(path.relative_to(self.path)))
        notes += [f"{name}: listed in {MANIFEST} but absent" for name in sorted(listed)]
        return problems, notes

    def load_checkpoint(self, path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        """A checkpoint's state, unpickled with ``weights_only=True``: tensors, numbers, strings
        and plain containers only, so a crafted file cannot run code; RunFolderError (one line)
        when it cannot be read that way."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any damage: say which file and why, in one line
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            code = [line for line in lines if "GLOBAL" in line]
            if isinstance(err, pickle.UnpicklingError) and code:  # torch's advice is not ours
                reason = (
                    f"it holds more than tensors, numbers, strings and containers "
                    f"({code[0].strip().rstrip('.')}): loading it could run code, so it is refused"
                )
            else:
                reason = f"{type(err).__name__}: {(lines or [''])[0]}"
            raise RunFolderError(
                f"checkpoint {str(path)!r} cannot be loaded safely: {reason[:300]}"
            ) from None
        if not isinstance(state, dict) or "iteration" not in state:
            raise RunFolderError(f"checkpoint {str(path)!r} is not a training state")
        return state

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's writer lock: ``fcntl.flock`` on ``run.lock``, which holds the
        holder's pid and host while it is held (and is emptied when released). One process at a
        time trains or resumes a run; a second one stops at once with one line naming the
        holder. Readers never take it."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # the holder writes its name just after it takes the lock: give it a moment
            for _ in range(20):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                if holder:
                    break
                time.sleep(0.01)
            holder = holder or "pid unknown"
            os.close(fd)
            raise RunFolderError(
                f"run {str(self.path)!r} is in use by another process ({holder}): one process "
                "at a time trains or resumes a run"
            ) from None
        try:
            with contextlib.suppress(OSError):  # a full disk: the lock holds all the same
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            yield self
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the lock

    def checkpoints(self) -> list[Path]:
        return sorted(self.checkpoint_dir.glob("ckpt_*.pt"))

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def remove_leftovers(self) -> list[Path]:
        """Delete ``*.tmp`` files left by a killed writer; return what was deleted."""
        removed = []
        for tmp in self.path.rglob("*.tmp"):
            tmp.unlink()
            removed.append(tmp)
        return removed


def blocking_file(path: Path) -> Path | None:
    """``path`` or the first of its parents that exists as something other than a folder (so
    that no folder can be made there)."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
