"""Cerebral LSTM (Kumar 2020) for PyTorch, and the harness that reproduces the paper's curves."""

import os

# Before torch loads OpenMP: threads that spin while they wait take the cores from a second
# training on the same machine, and both run 3-30x slower (docs/PERFORMANCE.md, "Several runs at
# once"). Passive waiting leaves bit patterns as they were and costs a lone run 0-12%. Importing
# the package sets it for the process and its children; a value the user set stays.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cerebral.cores import CerebralLSTM, CerebralLSTMCell, NovoLSTM, PostBiasLSTM  # noqa: E402

__all__ = ["CerebralLSTM", "CerebralLSTMCell", "NovoLSTM", "PostBiasLSTM"]
