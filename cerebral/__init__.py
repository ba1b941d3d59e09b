"""Cerebral LSTM (Kumar 2020) for PyTorch, and the harness that reproduces the paper's curves."""

from cerebral.cores import CerebralLSTM, CerebralLSTMCell, NovoLSTM, PostBiasLSTM

__all__ = ["CerebralLSTM", "CerebralLSTMCell", "NovoLSTM", "PostBiasLSTM"]
