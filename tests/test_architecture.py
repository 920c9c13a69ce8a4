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
            if (  # os.environ["RANK"]
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value in TORCHRUN_VARIABLES
            ):
                found.append(f"{name}: reads {node.slice.value}")
            if isinstance(node, ast.Attribute) and node.attr in PROCESS_GROUP_CALLS:
                found.append(f"{name}: calls {node.attr}")
    assert found == []


MANIFEST_KEYS = {
    *("format", "name", "created", "base", "dataset", "recipe_sha256", "trained_with", "versions", "files", "tensors"),
}


def manifest_key_reads(source: str) -> list[str]:
    """Where a module reads a manifest's keys by hand: `x["base"]` or `x.get("base")` where `x` comes from a
    manifest: an expression that names one (`manifest`, `manifests[name]`, `info.manifest`, a file read
    through `MANIFEST`), or a name bound from such an expression (`for name, m in manifests.items()`)."""
    tree = ast.parse(source)
    derived: set[str] = set()

    def bound_names(target: ast.AST) -> list[str]:
        """The names an assignment binds: `a`, `a, (b, *c)`; not `d` of `x[d] = ...`, which it only reads."""
        if isinstance(target, ast.Name):
            return [target.id]
        if isinstance(target, ast.Starred):
            return bound_names(target.value)
        if isinstance(target, (ast.Tuple, ast.List)):
            return [name for element in target.elts for name in bound_names(element)]
        return []

    def from_manifest(node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Name) and ("manifest" in n.id.lower() or n.id in derived))
            or (isinstance(n, ast.Attribute) and "manifest" in n.attr.lower())
            for n in ast.walk(node)
        )

    for _ in range(3):  # names bound from names bound from a manifest
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                bound, value = (node.targets if isinstance(node, ast.Assign) else [node.target]), node.value
            elif isinstance(node, (ast.For, ast.comprehension)):
                bound, value = [node.target], node.iter
            else:
                continue
            if from_manifest(value):
                derived |= {name for target in bound for name in bound_names(target)}

    def key(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and node.value in MANIFEST_KEYS else None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and key(node.slice) and from_manifest(node.value):
            found.append(f"line {node.lineno}: [{key(node.slice)!r}]")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and key(node.args[0])
            and from_manifest(node.func.value)
        ):
            found.append(f"line {node.lineno}: .get({key(node.args[0])!r})")
    return found


def test_only_the_manifest_module_reads_a_manifests_keys():
    """A manifest is read through its record (toolkit.store.manifest.Manifest), never walked as a dict."""
    found = [
        f"{name} {where}"
        for name, path in modules().items()
        if name != "toolkit.store.manifest"
        for where in manifest_key_reads(path.read_text())
    ]
    assert found == []


def test_the_manifest_check_sees_a_manifest_walked_by_hand():
    """The check above catches each way a manifest was read before it had a record, and nothing else."""
    readers = [
        'base = info.manifest.get("base", {})',
        'm = read_json(folder / MANIFEST)\nname = m.get("name")',
        'label = manifests[first].get("base", {}).get("name")',
        'bases = {n: m.get("base", {}) for n, m in manifests.items()}',
        'created = self.manifest["created"]',
    ]
    others = [
        'row = info.summary()\nbase = row["base"]\nsteps = metrics.get("train")',
        "name = info.manifest.base.name",
    ]
    assert [source for source in readers if not manifest_key_reads(source)] == []
    assert [source for source in others if manifest_key_reads(source)] == []


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
    """Which model runs under an adapter is modeling/switching.py's (base_of, loaded_adapters): no other
    module asks `hasattr(model, "get_base_model")` or calls peft's `get_base_model()` (which looks up the
    active adapter, gone once the last one is deleted)."""
    found = [
        f"{name}: line {node.lineno}"
        for name, path in modules().items()
        if name != "toolkit.modeling.switching"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (
            (
                getattr(node.func, "id", None) == "hasattr"
                and any(isinstance(a, ast.Constant) and a.value == "get_base_model" for a in node.args)
            )
            or getattr(node.func, "attr", None) == "get_base_model"
        )
    ]
    assert found == []
