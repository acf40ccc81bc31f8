"""One recorded trial: inputs, spikes, readout against target, voltages, signals and traces.

The readout panel shows, for an MSE task, the output y against the target y* per output unit;
for a cross-entropy task the softmax probability of the target class; the steps whose loss
counts are marked. Options: see --help or mdgl_analysis.analysis.figures.recorded_trial.

    python analyses/recorded_trial.py RUN_OR_FOLDER... --out DIR [--iteration N] [--trial K]
        [--rule RULE] [--seed S] [--signals bptt,eprop,mdgl] [--cells 2] [--synapses 4]
        [--outputs 3]
"""

from mdgl_analysis.analysis.figures.recorded_trial import main

if __name__ == "__main__":
    raise SystemExit(main())
