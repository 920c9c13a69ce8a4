"""Data: documents from files, datasets and builtins; packed training blocks; token streams for scoring."""
