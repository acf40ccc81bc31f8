"""The figures of recorded runs, one module per figure; imports no torch.

Each module draws one figure from run folders (or folders holding runs; runs are selected and
grouped by their configs, never by folder names) and has

* ``plot(...) -> matplotlib.figure.Figure``: the figure, for use from Python;
* ``main(argv: list[str] | None = None) -> int``: the command line
  ``python -m mdgl_analysis.analysis.figures.<name> RUN_OR_FOLDER... --out DIR [options]``,
  which writes ``<name>.png`` and ``<name>.pdf`` into ``DIR`` and prints their paths (exit
  status 0), or prints ``error: ...`` on stderr (status 2) when the runs cannot give the figure.

``mdgl figures RUN... --out DIR`` draws every figure of :data:`FIGURES`; ``analyses/<name>.py``
are the same command lines as scripts. What a figure knows of the task (its loss and metric,
the named epochs of a trial, the names of the input channels) it reads from run.json or the
records (:func:`mdgl_analysis.analysis.plotting.task_info`,
:func:`~mdgl_analysis.analysis.plotting.task_epochs`), never by building the task.
"""

FIGURES = (
    "fig3c_learning_curves",
    "alignment_over_training",
    "alignment_by_block",
    "alignment_over_time",
    "recorded_trial",
)
"""The figure modules, in the order ``mdgl figures`` draws them (also their output names)."""

__all__ = ["FIGURES"]
