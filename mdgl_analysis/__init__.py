"""mdgl-analysis: BPTT, e-prop and MDGL in recurrent spiking networks, with full-trace recording
and out-of-core gradient-alignment analysis (Liu et al., PNAS 2021, rebuilt in PyTorch)."""

__version__ = "0.1.0"
