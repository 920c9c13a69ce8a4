"""Training: the run from a recipe to an adapter, the Trainer as the toolkit runs it, checkpoints that survive
being killed, guards (signals, non-finite loss, disk space), the plan of a run, and its curves."""
