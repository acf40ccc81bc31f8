"""Analysis of recorded runs: gradient alignment, learning curves, figures. Imports no torch.

The functions are pure (xarray in, xarray out) and run lazily with dask; see
:mod:`.alignment` for the alignment measures and :mod:`.plotting` for the figure helpers.
"""

from mdgl_analysis.analysis.alignment import (
    angle,
    by_record,
    compare_with,
    contributions,
    cosine,
    credit_by_type,
    find_runs,
    gradient_alignment,
    learning_curves,
    load_metrics,
    moving_average,
    neuron_groups,
    norm_ratio,
    open_runs,
    run_config,
    scheduler,
    signal_alignment,
    step_contributions,
    synapse_blocks,
    tidy,
    time_alignment,
    time_alignments,
    window_contributions,
)

__all__ = [
    "angle",
    "by_record",
    "compare_with",
    "contributions",
    "cosine",
    "credit_by_type",
    "find_runs",
    "gradient_alignment",
    "learning_curves",
    "load_metrics",
    "moving_average",
    "neuron_groups",
    "norm_ratio",
    "open_runs",
    "run_config",
    "scheduler",
    "signal_alignment",
    "step_contributions",
    "synapse_blocks",
    "tidy",
    "time_alignment",
    "time_alignments",
    "window_contributions",
]
