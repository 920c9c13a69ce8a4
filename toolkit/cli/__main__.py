"""`python -m toolkit.cli`: the same as the `gpt2-adapt` command."""

from . import main

main()
