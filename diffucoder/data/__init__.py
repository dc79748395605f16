"""Corpora and datasets: the embedded standard-library corpus, packing, SFT data."""
