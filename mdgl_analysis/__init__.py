"""mdgl-analysis: BPTT, e-prop and MDGL in recurrent spiking networks, with full-trace recording
and out-of-core gradient-alignment analysis (Liu et al., PNAS 2021, rebuilt in PyTorch).

``mdgl_analysis.open_run(path)`` opens a run's records as a lazy xarray Dataset.
"""

__version__ = "0.1.0"

__all__ = ["open_run", "open_record", "__version__"]


def __getattr__(name: str):
    # the readers pull in xarray and h5py: imported on first use, not by the CLI's every start
    if name in ("open_run", "open_record"):
        from mdgl_analysis.recording import readers as io

        return getattr(io, name)
    raise AttributeError(f"module 'mdgl_analysis' has no attribute {name!r}")
