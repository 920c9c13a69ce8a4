"""The `gpt2-adapt` command line: a thin Click layer over the toolkit.

`app` defines the group; each `*_cmd` module defines its commands without knowing the group; this module puts
them together.
"""

from .adapters_cmd import adapters
from .app import main
from .bench_cmd import bench
from .eval_cmd import eval_cmd
from .export_cmd import export
from .generate_cmd import generate
from .merge_cmd import merge
from .plan_cmd import plan
from .recipe_cmd import recipe
from .serve_cmd import serve
from .train_cmd import train

for command in (train, plan, recipe, adapters, eval_cmd, generate, merge, export, serve, bench):
    main.add_command(command)

__all__ = ["main"]
