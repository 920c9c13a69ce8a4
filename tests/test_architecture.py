"""The shape of the package: no import cycle, no module importing from a layer above its own, click only
in the CLI, torch's precision names in one module, and no library message that spells a command-line option
(the CLI maps parameters to options)."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "toolkit"
# Lowest first: a module may import from its own layer and the layers before it, never after.
LAYERS = [
    {"errors", "files", "hardware", "records", "distributed", "threads"},
    {"config"},
    {"sources"},
    {"modeling"},
    {"data"},
    {"store"},
    {"evaluation"},
    {"training"},
    {"generation"},
    {"exporting"},
    {"bench", "serving"},
    {"cli"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The toolkit modules `name` imports, at its top or inside functions (a lazy import still depends)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from .x import name` names a module or a thing in one
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for index, members in enumerate(LAYERS):
        if part in members:
            return index
    raise AssertionError(f"{module} belongs to no layer; add its package to LAYERS")


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(edges.get(module, ())):
            if other == "toolkit":  # the package facade: lazy, imports nothing statically
                continue
            if state.get(other) == 1:
                cycle = path[path.index(other) :] + [other]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{module} imports {other}"
        for module, others in graph().items()
        if module != "toolkit"
        for other in others
        if other != "toolkit" and layer(other) > layer(module)
    ]
    assert upward == []


def test_only_the_cli_imports_click():
    users = [
        m
        for m, others in graph().items()
        if not m.startswith("toolkit.cli")
        for node in ast.walk(ast.parse(modules()[m].read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any((getattr(node, "module", None) or alias.name).split(".")[0] == "click" for alias in node.names)
    ]
    assert users == []


TORCHRUN_VARIABLES = {"RANK", "WORLD_SIZE", "LOCAL_RANK"}
PROCESS_GROUP_CALLS = {"init_process_group", "destroy_process_group"}


def test_only_toolkit_distributed_reads_torchrun_or_owns_the_process_group():
    """torchrun's variables are read, and the process group started and torn down, in one module."""
    found = []
    for name, path in modules().items():
        if name == "toolkit.distributed":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(
                isinstance(a, ast.Constant) and a.value in TORCHRUN_VARIABLES for a in node.args
            ):
                found.append(f"{name}: reads {node.args[0].value}")
            if isinstance(node, ast.Attribute) and node.attr in PROCESS_GROUP_CALLS:
                found.append(f"{name}: calls {node.attr}")
    assert found == []


def _strings(tree: ast.AST):
    """String constants of a module, docstrings left out (they may show how the CLI is used)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


TORCH_PRECISION_NAMES = {"float32", "bfloat16", "float16"}  # torch's: the toolkit says fp32, bf16, fp16


def _is_torch_precision(node) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in TORCH_PRECISION_NAMES
        and isinstance(node.value, ast.Name)
        and node.value.id == "torch"
    )


def test_only_modeling_precision_translates_between_the_toolkits_precisions_and_torchs():
    """torch's names of the precisions (a string "bfloat16" or "torch.bfloat16") and tables of torch dtypes
    (`{"bf16": torch.bfloat16}`) live in toolkit/modeling/precision.py alone; everything else asks it, so the
    aliases cannot spread again. (Passing `dtype=torch.float32` to a library is no translation.)"""
    found = []
    for name, path in modules().items():
        if name == "toolkit.modeling.precision":
            continue
        tree = ast.parse(path.read_text())
        found += [
            f"{name} line {node.lineno}: {node.value!r}"
            for node in _strings(tree)
            if node.value.removeprefix("torch.") in TORCH_PRECISION_NAMES
        ]
        found += [
            f"{name} line {node.lineno}: a table of torch dtypes"
            for node in ast.walk(tree)
            if isinstance(node, ast.Dict) and any(_is_torch_precision(n) for n in [*node.keys, *node.values] if n)
        ]
    assert found == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if not m.startswith("toolkit.cli")))
def test_library_messages_name_parameters_not_options(module):
    import re

    flagged = [
        f"line {node.lineno}: {node.value!r}"
        for node in _strings(ast.parse(modules()[module].read_text()))
        if re.search(r"(^|[\s(`'\"])--[a-z]", node.value)
    ]
    assert flagged == [], "use errors.param(name) instead of spelling an option"


def test_only_modeling_switching_tells_a_peft_model_from_a_plain_one():
    """Which model runs under an adapter is modeling/switching.py's (base_of, loaded_adapters): no module
    asks `hasattr(model, "get_base_model")` on its own."""
    found = [
        f"{name}: line {node.lineno}"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "hasattr"
        and any(isinstance(a, ast.Constant) and a.value == "get_base_model" for a in node.args)
    ]
    assert found == []
