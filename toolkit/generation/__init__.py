"""Generation: the settings, which adapter runs (swap, load one more), generating (single, mixed batches,
streaming), weighted mixes, merging into a standalone model, and the interactive loop."""
