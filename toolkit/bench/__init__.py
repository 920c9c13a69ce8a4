"""`gpt2-adapt bench`: speed and memory on this machine (training, evaluation, generation, data, serving), each
case in a fresh process. The comparisons with other pipelines and the project's targets are the repository's
benchmark scripts' (benchmarks/), not the installed package's."""
