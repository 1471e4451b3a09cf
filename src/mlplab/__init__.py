"""mlplab: train and compare small MLPs with Lightning and Hydra, checked against raw PyTorch."""

__version__ = "0.1.0"
