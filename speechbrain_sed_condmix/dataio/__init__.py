"""Data preparation, label encoding and batching for DESED-style data."""
