"""Learning curves per rule: validation loss (A) and the task's metric (B) against iteration.

Mean ± std over seeds of each run's smoothed validation curve; the metric is accuracy for a
cross-entropy task and normalised MSE for an MSE task. For the evidence-accumulation task panel A
is the paper's Fig. 3C. Options: see --help or mdgl_analysis.analysis.figures.fig3c_learning_curves.

    python analyses/fig3c_learning_curves.py RUN_OR_FOLDER... --out DIR [--smooth 5]
"""

from mdgl_analysis.analysis.figures.fig3c_learning_curves import main

if __name__ == "__main__":
    raise SystemExit(main())
