"""Alignment with BPTT within a trial: cosine of learning signal × eligibility trace per window.

From records with signals and traces; the task's named epochs (cues, delay, recall; NeuroGym's
periods) on top when it has any. Options: see --help or
mdgl_analysis.analysis.figures.alignment_over_time.

    python analyses/alignment_over_time.py RUN_OR_FOLDER... --out DIR [--window-ms 50]
        [--trained-with auto] [--matrix rec,in]
"""

from mdgl_analysis.analysis.figures.alignment_over_time import main

if __name__ == "__main__":
    raise SystemExit(main())
