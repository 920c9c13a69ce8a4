"""Evaluation: the protocol, the one NLL scorer, the `evaluate` metric module, runs over models x texts, and
the reports (table, CSV, heatmap)."""
