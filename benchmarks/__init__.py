"""The repository's benchmark scripts (not tests, not installed): run each from the repository root as
`python -m benchmarks.NAME`; each says in its docstring what it prints. comparisons.py and targets.py are what
they share beside `gpt2-adapt bench`: the other pipelines the toolkit is compared with, and the project's
targets."""
