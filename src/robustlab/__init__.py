"""robustlab: attacks, defenses and capacity experiments for robust deep learning."""

__version__ = "0.1.0"
