"""`gpt2-adapt bench`: speed and memory on this machine (training, evaluation, generation, data, serving), each
case in a fresh process, with the targets."""
