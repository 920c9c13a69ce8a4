"""`gpt2-adapt bench`: speed and memory on this machine, each case in a fresh process, with the targets."""
