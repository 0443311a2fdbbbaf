"""Embedded data sets and generators (no downloads)."""
from .datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
