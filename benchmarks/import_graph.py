"""The shape of the package in numbers: import cycles, modules per package, the longest
functions, the largest modules and the modules that import `neuralab.config`.

Every import statement counts, wherever it is written: at module level, inside a function,
under `if TYPE_CHECKING:`, and `importlib.import_module("neuralab....")` with a constant name.
`from package import name` is an edge to the submodule `package.name` when that is a module,
else to `package` (the convention of import-linter and grimp); the implicit import of a parent
package that Python performs first is not an edge, or every package whose `__init__` imports
its own submodules would count as a cycle.

Usage:
    python benchmarks/import_graph.py               # src/neuralab, a plain report
    python benchmarks/import_graph.py --json        # the same numbers, machine-readable
    python benchmarks/import_graph.py --top 20      # longer top lists
Exits 1 when there is an import cycle.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "neuralab"
CONFIG_MODULE = "neuralab.config"
CONFIG_CLASS = "RunConfig"


@dataclass
class Module:
    """One source file: its dotted name, its lines and its neuralab imports (target → line)."""

    name: str
    path: Path
    is_package: bool
    lines: int
    tree: ast.Module
    imports: dict[str, int] = field(default_factory=dict)


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """`src/neuralab/data/text.py` → ("neuralab.data.text", False); `__init__.py` → its package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def read_modules(root: Path) -> dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name, is_package = module_name(path, root)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        modules[name] = Module(name, path, is_package, len(text.splitlines()), tree)
    return modules


def absolute(node: ast.ImportFrom, module: Module) -> str:
    """The absolute module an `ImportFrom` names, resolving `from . import x` style imports."""
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def targets(node: ast.AST, module: Module, known: dict[str, Module]) -> list[str]:
    """The neuralab modules one AST node imports (none for other nodes)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = absolute(node, module)
        found = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
        # Any name that is not a submodule is an attribute of `source` itself.
        return found if len(found) == len(node.names) else [*found, source]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def link(modules: dict[str, Module]) -> None:
    """Fill each module's `imports` with the neuralab modules it names (first line kept)."""
    for module in modules.values():
        for node in ast.walk(module.tree):
            for target in targets(node, module, modules):
                # `import neuralab.x.y` of an attribute-less name: keep the longest known prefix.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module.name:
                    module.imports.setdefault(target, node.lineno)


def strongly_connected(modules: dict[str, Module]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in modules[name].imports:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(components)


def one_cycle(component: list[str], modules: dict[str, Module]) -> list[str]:
    """A shortest cycle through the component's first module, as `module:line` hops."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for target in modules[name].imports:
                if target == start:
                    return [*paths[name], start]
                if target in members and target not in paths:
                    paths[target] = [*paths[name], target]
                    following.append(target)
        frontier = following
    return component  # unreachable for a strongly connected component


def describe_cycle(cycle: list[str], modules: dict[str, Module]) -> str:
    hops = [f"{a} (line {modules[a].imports[b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join([*hops, cycle[-1]])


def functions(modules: dict[str, Module]) -> list[tuple[int, str]]:
    """(lines, `module:qualified.name`) of every function and method, longest first."""
    found = []
    for module in modules.values():
        for node, qualified in walk_functions(module.tree, ""):
            found.append((node.end_lineno - node.lineno + 1, f"{module.name}:{qualified}"))
    return sorted(found, key=lambda item: (-item[0], item[1]))


def walk_functions(node: ast.AST, prefix: str):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualified = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield child, qualified
            yield from walk_functions(child, qualified + ".")
        else:
            yield from walk_functions(child, prefix)


def names_run_config(module: Module) -> bool:
    """Whether the module names `RunConfig` anywhere (an import, an annotation, a call)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == CONFIG_CLASS for a in node.names):
            return True
        if isinstance(node, ast.Name) and node.id == CONFIG_CLASS:
            return True
        if isinstance(node, ast.Attribute) and node.attr == CONFIG_CLASS:
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            # `from __future__ import annotations` style string annotations.
            if CONFIG_CLASS in node.value.split("|")[0].strip().split("."):
                return True
    return False


def package_of(module: Module) -> str:
    return module.name if module.is_package else module.name.rpartition(".")[0]


def report(root: Path, top: int) -> dict:
    modules = read_modules(root)
    link(modules)
    components = strongly_connected(modules)
    lengths = functions(modules)
    sizes = sorted(((m.lines, m.name) for m in modules.values()), key=lambda i: (-i[0], i[1]))
    per_package = Counter(package_of(m) for m in modules.values() if not m.is_package)
    return {
        "modules": len(modules),
        "cycles": [describe_cycle(one_cycle(c, modules), modules) for c in components],
        "cycle_components": components,
        "modules_per_package": dict(sorted(per_package.items())),
        "functions": len(lengths),
        "median_function_lines": statistics.median(n for n, _ in lengths) if lengths else 0,
        "longest_functions": lengths[:top],
        "largest_modules": sizes[:top],
        "import_config": sorted(n for n, m in modules.items() if CONFIG_MODULE in m.imports),
        "name_run_config": sorted(
            n for n, m in modules.items() if n != CONFIG_MODULE and names_run_config(m)
        ),
    }


def print_report(numbers: dict) -> None:
    print(f"modules: {numbers['modules']}")
    print(f"import cycles: {len(numbers['cycles'])}")
    for cycle, component in zip(numbers["cycles"], numbers["cycle_components"], strict=True):
        print(f"  {cycle}")
        print(f"    (component: {', '.join(component)})")
    print("modules per package (package __init__ not counted):")
    for package, count in numbers["modules_per_package"].items():
        print(f"  {package:<24} {count}")
    print(
        f"functions: {numbers['functions']}, median {numbers['median_function_lines']} lines; "
        "longest:"
    )
    for lines, name in numbers["longest_functions"]:
        print(f"  {lines:>5}  {name}")
    print("largest modules (lines):")
    for lines, name in numbers["largest_modules"]:
        print(f"  {lines:>5}  {name}")
    print(f"modules importing {CONFIG_MODULE}: {len(numbers['import_config'])}")
    for name in numbers["import_config"]:
        print(f"  {name}")
    print(f"modules naming {CONFIG_CLASS}: {len(numbers['name_run_config'])}")
    for name in numbers["name_run_config"]:
        print(f"  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the package folder to walk")
    parser.add_argument("--top", type=int, default=10, help="entries in each top list")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    numbers = report(args.root.resolve(), args.top)
    if args.json:
        print(json.dumps(numbers, indent=2))
    else:
        print_report(numbers)
    return 1 if numbers["cycles"] else 0


if __name__ == "__main__":
    sys.exit(main())
