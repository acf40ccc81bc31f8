"""Alignment with BPTT over training: cosine of each rule's gradient with BPTT's, per iteration.

Recurrent (A) and input (B) weights, mean ± std over seeds, from the cos_<rule>_<part> metrics
(train.compare_every > 0) or the records. Any task. Options: see --help or
mdgl_analysis.analysis.figures.alignment_over_training.

    python analyses/alignment_over_training.py RUN_OR_FOLDER... --out DIR [--trained-with auto]
"""

from mdgl_analysis.analysis.figures.alignment_over_training import main

if __name__ == "__main__":
    raise SystemExit(main())
