"""mdgl-analysis: BPTT, e-prop and MDGL in recurrent spiking networks, with full-trace recording
and out-of-core gradient-alignment analysis (Liu et al., PNAS 2021, rebuilt in PyTorch).

The Python API (see ``docs/api.md``)::

    import mdgl_analysis as m

    run = m.train("demo", task="pattern", rule="eprop", out="runs/pattern-eprop")
    run.metrics(); run.records()          # metrics table; lazy xarray Dataset of the records
    m.resume(run, iterations=600)
    ds = m.open_run("runs/pattern-eprop")  # the records of a run folder, lazily

Subpackages: ``network`` (neurons, connectivity, readout and losses), ``tasks``, ``rules``,
``training`` (loop, optimiser, run folders, sweeps), ``recording`` (schema, traces, writer,
readers, verification) and ``analysis`` (alignment, learning curves, figures; no torch).
"""

__version__ = "0.2.0"

__all__ = [
    "Run",
    "__version__",
    "configure",
    "estimate",
    "load_run",
    "open_record",
    "open_run",
    "resume",
    "train",
]

_API = ("Run", "RunError", "configure", "estimate", "load_run", "resume", "train")
_READERS = ("open_run", "open_record")


def __getattr__(name: str):
    # imported on first use: the readers pull in xarray and h5py, the API torch
    if name in _READERS:
        from mdgl_analysis.recording import readers

        return getattr(readers, name)
    if name in _API:
        from mdgl_analysis import api

        return getattr(api, name)
    raise AttributeError(f"module 'mdgl_analysis' has no attribute {name!r}")
