"""Records as one NWB file (Neurodata Without Borders 2.x, written with pynwb).

``export_nwb(source, out)`` writes the recorded trials of every record of a run (or of one record
file) into a new file ``out`` (``FILE.nwb``). Optional: ``pip install 'mdgl-analysis[nwb]'``
(pynwb, and nwbinspector to check the file).

**One timeline.** NWB has a single time axis per file, in seconds, while a run holds several
records (iterations), each with several recorded trials of the same length. Every recorded trial
of every record becomes one row of the NWB trials table, laid end to end in the order
(iteration, trial) with a gap of :data:`GAP_S` seconds between consecutive trials: the k-th
trial starts at ``k * (T + GAP_S)`` seconds, where ``T`` is the trial's duration (steps x dt), and
a step at ``t`` ms of its trial is at ``start + t / 1000``. The timeline is the order of the
record, not wall-clock time: ``session_start_time`` is the run's start (``run.json``), and the
gaps only keep trials apart. The trials table says where each trial came from: columns
``iteration`` (the training iteration of its record), ``batch_index`` (its index in that
iteration's batch), ``target`` (cross-entropy tasks: the target class at the trial's last masked
step), and the batch's ``loss`` and metric (``accuracy`` or ``nmse``) at that iteration. The
task's named windows (cues, recall, ...; the record's ``task_epochs``) are rows of the epochs
table, tagged with their name, in every trial.

**What goes where.**

=======================================  ===========================================================
record variable                          NWB object
=======================================  ===========================================================
``z`` (spikes)                           ``units``: one unit per neuron (id = neuron index), spike
                                         times in seconds; ``obs_intervals`` = the recorded windows;
                                         columns ``cell_type`` (E/I), ``adaptive`` (ALIF or not),
                                         ``readout`` (has a readout weight; one value per recorded
                                         iteration when it changes)
``v``, ``threshold``, ``a``              ``acquisition/membrane_potential``, ``.../threshold``,
                                         ``.../adaptation``: TimeSeries [time, neuron]
``y``                                    ``acquisition/readout_output``: TimeSeries [time, output]
``x``                                    ``stimulus/inputs``: TimeSeries [time, input] over the
                                         whole trial (counts per step, or currents)
``target`` or ``target_value``, ``mask`` ``processing/task``: TimeSeries over the whole trial
``loss``, ``accuracy`` / ``nmse``        trials table columns
``task_epochs`` (attribute)              epochs table
config, run id, task, rule, version      session metadata (``identifier`` = run id, description,
                                         ``notes`` = the resolved config as JSON)
=======================================  ===========================================================

Only the recorded trials and the recorded window are exported (the per-step variables exist
there only); the inputs, targets and mask of those trials cover the whole trial. The learning
signals, credit, eligibility traces, gradients and weights stay in the records: NWB has no type
for them, and the records are their reference. Units are the records' (``units`` attributes of
:mod:`mdgl_analysis.recording.schema`): the network is dimensionless (``"1"``; its threshold is
``network.v_th``), spike times are in seconds. Large datasets are written chunk by chunk (memory
bounded by a buffer of about 64 MiB) and gzip-compressed (``codec = "none"``: uncompressed).

This module imports no torch, and pynwb only when a file is written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the blosc filter the records use
import numpy as np

from mdgl_analysis import __version__
from mdgl_analysis.recording import schema
from mdgl_analysis.recording.export import (
    CODECS,
    ExportError,
    check_manifest,
    check_out,
    reading,
    source_records,
)

__all__ = ["GAP_S", "INSTALL", "export_nwb"]

GAP_S = 1.0
"""Seconds between the end of one exported trial and the start of the next on the timeline."""

INSTALL = "pip install 'mdgl-analysis[nwb]' (pynwb and nwbinspector)"

BUFFER_BYTES = 64 * 2**20
"""Largest block of a TimeSeries held in memory while writing it."""

STATE = {  # record variable -> (NWB name, what it is)
    "v": ("membrane_potential", "membrane potential v(t) of every neuron"),
    "threshold": ("threshold", "adaptive threshold A(t) = v_th + beta a(t) of every neuron"),
    "a": ("adaptation", "adaptation variable a(t) of every neuron (0 for LIF cells)"),
    "y": ("readout_output", "readout output y(t) (logits for cross-entropy tasks)"),
}


def _pynwb():
    """The pynwb module, or ExportError saying how to install it."""
    try:
        import pynwb
        from hdmf.data_utils import GenericDataChunkIterator  # noqa: F401
    except ImportError:
        raise ExportError(f"--format nwb needs pynwb: {INSTALL}") from None
    return pynwb


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Trial:
    """One exported trial: its record, its place in the record and on the timeline."""

    def __init__(self, path: Path, position: int, batch_index: int, start: float):
        self.path, self.position, self.batch_index, self.start = path, position, batch_index, start


class _Files:
    """Open read-only record files, each with a chunk cache large enough that reading one trial
    after another decompresses every chunk once."""

    def __init__(self) -> None:
        self.open: dict[Path, h5py.File] = {}

    def __getitem__(self, path: Path) -> h5py.File:
        if path not in self.open:
            self.open[path] = h5py.File(path, "r", rdcc_nbytes=BUFFER_BYTES, rdcc_nslots=10007)
        return self.open[path]

    def close(self) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()


def _series_data(pynwb, files: _Files, name: str, trials: list[_Trial], column: str):
    """The values of record variable ``name`` (dims ``[steps, trial or batch, ...]``) of every
    exported trial, one after another along the first axis, as an hdmf chunk iterator that reads
    them a buffer at a time. ``column``: ``"position"`` (recorded trials) or ``"batch_index"``."""
    from hdmf.data_utils import GenericDataChunkIterator

    class TrialRows(GenericDataChunkIterator):
        def __init__(self) -> None:
            first = files[trials[0].path][name]
            self.row_shape, self.stored = first.shape[2:], first.dtype
            self.steps = [files[t.path][name].shape[0] for t in trials]
            self.offsets = np.concatenate([[0], np.cumsum(self.steps)]).astype(int)
            rows = int(self.offsets[-1])
            row_bytes = self.stored.itemsize * int(np.prod(self.row_shape))
            chunk = max(1, min(rows, (4 * 2**20) // max(1, row_bytes)))
            buffer = max(chunk, (BUFFER_BYTES // max(1, row_bytes)) // chunk * chunk)
            super().__init__(
                chunk_shape=(chunk, *self.row_shape),
                buffer_shape=(min(buffer, rows), *self.row_shape),
            )

        def _get_dtype(self) -> np.dtype:
            return self.stored

        def _get_maxshape(self) -> tuple[int, ...]:
            return (int(self.offsets[-1]), *self.row_shape)

        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            rows, rest = selection[0], (slice(None), *selection[1:])
            start, stop = rows.start or 0, rows.stop
            parts = []
            for i, trial in enumerate(trials):
                lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
                if lo < hi:
                    index = getattr(trial, column)
                    dataset = files[trial.path][name]
                    block = dataset[lo - self.offsets[i] : hi - self.offsets[i], index]
                    parts.append(block[rest])
            return np.concatenate(parts)

    return TrialRows()


def _compressed(pynwb, data, codec: str):
    from hdmf.backends.hdf5.h5_utils import H5DataIO

    return H5DataIO(data=data, **CODECS[codec]) if CODECS[codec] else data


def _timestamps(files: _Files, trials: list[_Trial], coord: str) -> np.ndarray:
    """Seconds on the timeline of every step of coordinate ``coord`` (ms) of every trial."""
    return np.concatenate(
        [t.start + files[t.path][coord][()].astype(np.float64) / 1000.0 for t in trials]
    )


def _session_start(run_meta: dict[str, Any], attrs: dict[str, Any]) -> dt.datetime:
    for text in (run_meta.get("started"), attrs.get("created")):
        if text:
            try:
                start = dt.datetime.fromisoformat(_text(text))
            except ValueError:
                continue
            return start if start.tzinfo else start.astimezone()
    return dt.datetime.now(dt.UTC).astimezone()


def _channel_names(names: list[str]) -> str:
    """``left x10, right x10, ...`` of a list of channel names."""
    groups: list[list] = []
    for name in names:
        if groups and groups[-1][0] == name:
            groups[-1][1] += 1
        else:
            groups.append([name, 1])
    return ", ".join(f"{n or 'unnamed'} x{k}" for n, k in groups)


def export_nwb(source: str | Path, out: str | Path, codec: str = "gzip") -> Path:
    """Write the recorded trials of the run folder or record file ``source`` as the new NWB file
    ``out`` (see the module docstring for the mapping); returns ``out``.

    Raises ExportError (one line) without pynwb, for a source without records or without the
    network state (``record.quantities`` without ``state``), an ``out`` that exists or does not
    end in ``.nwb``; nothing is created then. The file is written under a temporary name beside
    ``out`` and linked to its name when complete; a failure leaves nothing.
    """
    if codec not in CODECS:
        raise ExportError(f"codec {codec!r} is not allowed: one of {', '.join(CODECS)}")
    is_run, records = source_records(source)
    if Path(out).suffix != ".nwb":
        raise ExportError(f"--out {str(out)!r}: the name of an NWB file ends in .nwb")
    out = check_out(source, out)
    for record in records:
        with h5py.File(record, "r") as f:
            if "z" not in f:
                raise ExportError(
                    f"record {str(record)!r} holds no network state (record.quantities without "
                    "state): NWB export needs the spikes"
                )
    pynwb = _pynwb()
    if not is_run:
        _write(pynwb, records, {}, out, codec)
        return out
    run_json = Path(source) / "run.json"
    try:
        run_meta = json.loads(run_json.read_text())
        if not isinstance(run_meta, dict):
            raise ValueError
    except ValueError:
        raise ExportError(f"{str(run_json)!r} is not a JSON object") from None
    with reading(Path(source)):
        check_manifest(Path(source), records)
        _write(pynwb, records, run_meta, out, codec)
    return out


def _write(pynwb, records: list[Path], run_meta: dict[str, Any], out: Path, codec: str) -> None:
    """Build the NWB file of ``records`` under a temporary name and link it to ``out``."""
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp.nwb")
    os.close(fd)
    tmp = Path(name)
    files = _Files()
    try:
        nwb = _build(pynwb, files, records, run_meta, codec)
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            os.link(tmp, out)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            raise ExportError(f"--out {str(out)!r} already exists; choose a new path") from None
    finally:
        files.close()
        tmp.unlink(missing_ok=True)


def _build(pynwb, files: _Files, records: list[Path], run_meta: dict[str, Any], codec: str):
    from pynwb import NWBFile, TimeSeries
    from pynwb.file import Subject
    from pynwb.misc import Units

    first = files[records[0]]
    attrs = {k: first.attrs[k] for k in first.attrs}
    dt_ms = float(np.asarray(attrs["dt_ms"]).ravel()[0])
    task, rule = _text(attrs.get("task", "?")), _text(attrs.get("training_rule", "?"))
    loss_kind = _text(attrs.get("loss", "cross_entropy"))
    metric = _text(attrs.get("metric", "accuracy"))
    written_by = _text(attrs.get("mdgl_analysis_version", __version__))
    run_id = _text(run_meta.get("id") or attrs.get("run_id") or records[0].stem)

    # the timeline: every recorded trial of every record, end to end
    trials: list[_Trial] = []
    per_record: list[tuple[Path, int]] = []
    start = 0.0
    for record in records:
        f = files[record]
        iteration = int(np.asarray(f["iteration"][()]).ravel()[0])
        per_record.append((record, iteration))
        duration = f["input_time"].shape[0] * dt_ms / 1000.0
        for position, batch_index in enumerate(f["trial"][()].tolist()):
            trials.append(_Trial(record, position, int(batch_index), start))
            start += duration + GAP_S
    iterations = [it for _, it in per_record]

    nwb = NWBFile(
        session_description=(
            f"Recurrent spiking network (LIF and ALIF cells) on the {task} task, trained with "
            f"{rule}; simulated with mdgl-analysis {written_by}. {len(trials)} recorded trials "
            f"of iterations {', '.join(map(str, iterations))}, laid end to end {GAP_S:g} s apart."
        ),
        identifier=run_id,
        session_start_time=_session_start(run_meta, attrs),
        session_id=run_id,
        experiment_description=(
            f"Run {run_id} of mdgl-analysis: task {task} ({loss_kind} loss), learning rule "
            f"{rule}, seed {run_meta.get('seed', '?')}; each NWB trial is one recorded trial "
            "of one recorded training iteration (trials columns iteration and batch_index)."
        ),
        notes="resolved config (JSON): " + _text(attrs.get("config", "{}")),
        source_script=f"mdgl-analysis {__version__} (mdgl export --format nwb)",
        source_script_file_name="mdgl_analysis/recording/nwb.py",
        keywords=["spiking neural network", "simulation", "e-prop", "MDGL", "BPTT", task, rule],
        lab="simulation (mdgl-analysis)",
    )

    n_neurons = first["neuron"].shape[0]
    nwb.subject = Subject(
        subject_id=run_id,
        description=(
            f"a simulated recurrent network of {n_neurons} spiking neurons (no animal), "
            "initialised when the run started"
        ),
        # NCBI's taxon for artificial things ("synthetic construct"); no animal is involved
        species="http://purl.obolibrary.org/obo/NCBITaxon_32630",
        sex="O",
        date_of_birth=nwb.session_start_time,
    )

    # trials and the task's epochs
    nwb.add_trial_column("iteration", "the training iteration whose record holds this trial")
    nwb.add_trial_column("batch_index", "index of this trial in that iteration's batch")
    if loss_kind == "cross_entropy":
        nwb.add_trial_column("target", "target class at the trial's last masked step")
    nwb.add_trial_column("loss", "loss of the iteration's whole batch (mean over masked steps)")
    nwb.add_trial_column(metric, f"{metric} of the iteration's whole batch")
    epochs = json.loads(_text(attrs.get("task_epochs", "[]")))
    for trial in trials:
        f = files[trial.path]
        row: dict[str, Any] = {
            "start_time": trial.start,
            "stop_time": trial.start + f["input_time"].shape[0] * dt_ms / 1000.0,
            "iteration": int(np.asarray(f["iteration"][()]).ravel()[0]),
            "batch_index": trial.batch_index,
            "loss": float(f["loss"][()]),
            metric: float(f[metric][()]) if metric in f else float("nan"),
        }
        if loss_kind == "cross_entropy":
            mask = f["mask"][:, trial.batch_index].astype(bool)
            steps = np.flatnonzero(mask)
            target = f["target"][:, trial.batch_index]
            row["target"] = int(target[steps[-1]] if steps.size else target[-1])
        nwb.add_trial(**row)
        for name, first_step, stop_step in epochs:
            nwb.add_epoch(
                start_time=trial.start + first_step * dt_ms / 1000.0,
                stop_time=trial.start + stop_step * dt_ms / 1000.0,
                tags=[str(name)],
            )

    # spikes as units
    cell_type = [_text(c) for c in first["cell_type"][()]]
    adaptive = first["adaptive"][()].astype(bool)
    readout = np.stack([files[r]["readout"][()].astype(bool) for r in records], axis=1)
    n = len(cell_type)
    spikes: list[list[np.ndarray]] = [[] for _ in range(n)]
    windows = []
    for trial in trials:
        f = files[trial.path]
        seconds = trial.start + f["time"][()].astype(np.float64) / 1000.0
        z = f["z"][:, trial.position, :]
        steps, cells = np.nonzero(z)
        for cell in range(n):
            spikes[cell].append(seconds[steps[cells == cell]])
        windows.append([float(seconds[0]), float(seconds[-1] + dt_ms / 1000.0)])
    nwb.units = Units(
        name="units",
        description="spikes of every neuron in the recorded windows (obs_intervals)",
        resolution=dt_ms / 1000.0,  # spikes happen at steps of dt
    )
    nwb.add_unit_column("cell_type", "E (excitatory) or I (inhibitory), Dale's law")
    nwb.add_unit_column("adaptive", "True for ALIF cells (adaptive threshold), False for LIF")
    constant_readout = bool((readout == readout[:, :1]).all())
    nwb.add_unit_column(
        "readout",
        "True if the cell has a readout weight"
        + ("" if constant_readout else f", at each recorded iteration ({iterations})"),
    )
    for cell in range(n):
        nwb.add_unit(
            id=cell,
            spike_times=np.concatenate(spikes[cell]),
            obs_intervals=windows,
            cell_type=cell_type[cell],
            adaptive=bool(adaptive[cell]),
            readout=bool(readout[cell, 0]) if constant_readout else readout[cell].tolist(),
        )

    # network state as time series over the recorded windows
    state_times: Any = None  # the first series' timestamps, then that series (linked)
    for name, (nwb_name, description) in STATE.items():
        if name not in first:
            continue
        var = schema.VARIABLES[name]
        if state_times is None:
            state_times = _timestamps(files, trials, "time")
        series = TimeSeries(
            name=nwb_name,
            description=f"{description}; record variable {name!r} ({var.description})",
            data=_compressed(pynwb, _series_data(pynwb, files, name, trials, "position"), codec),
            unit=var.units,
            timestamps=state_times,
            continuity="continuous",
            comments="dimensionless model units (unit '1'; the firing threshold is network.v_th)",
        )
        if isinstance(state_times, np.ndarray):
            state_times = series
        nwb.add_acquisition(series)

    # inputs, targets and mask over the whole trial
    input_times = _timestamps(files, trials, "input_time")
    x = schema.VARIABLES["x"]
    names = [_text(c) for c in first["input_population"][()]] if "input_population" in first else []
    inputs = TimeSeries(
        name="inputs",
        description=f"network inputs per step ({x.description}); channels: "
        + (_channel_names(names) if names else f"{first['input'].shape[0]} unnamed"),
        data=_compressed(pynwb, _series_data(pynwb, files, "x", trials, "batch_index"), codec),
        unit=x.units,
        timestamps=input_times,
        continuity="step",
    )
    nwb.add_stimulus(inputs)
    task_module = nwb.create_processing_module("task", f"the {task} task's targets and loss mask")
    for name in ("target", "target_value", "mask"):
        if name not in first:
            continue
        var = schema.VARIABLES[name]
        task_module.add(
            TimeSeries(
                name=name,
                description=f"{var.description} (record variable {name!r})",
                data=_compressed(
                    pynwb, _series_data(pynwb, files, name, trials, "batch_index"), codec
                ),
                unit=var.units,
                timestamps=inputs,
                continuity="step",
            )
        )
    return nwb
