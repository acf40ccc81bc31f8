"""Alignment with BPTT per cell-type block (E→E, E→I, I→E, I→I, input→E, input→I), per rule.

Bars: mean over seeds of each seed's cosine averaged over its compared iterations; dots: seeds.
Any task. Options: see --help or mdgl_analysis.analysis.figures.alignment_by_block.

    python analyses/alignment_by_block.py RUN_OR_FOLDER... --out DIR [--trained-with auto]
        [--min-iteration N] [--max-iteration N]
"""

from mdgl_analysis.analysis.figures.alignment_by_block import main

if __name__ == "__main__":
    raise SystemExit(main())
