"""The package layout: no import cycles among grpo_cli's modules, counting imports inside functions and the
package __init__ that importing a submodule runs first."""

import ast

from conftest import REPO

SRC = REPO / "src"


def module_imports() -> dict[str, set[str]]:
    """{module: the grpo_cli modules it imports}, every import statement of the file (top level or not)."""
    paths = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base] * bool(base))
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[module] = set()
        for target in targets:
            while target and target not in paths:  # `from pkg import name`: name is no module
                target = target.rpartition(".")[0]
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too.
            while target.startswith("grpo_cli"):
                if target != module and not module.startswith(target + "."):
                    graph[module].add(target)
                target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph[node]:
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    graph = module_imports()
    assert "grpo_cli.training.trainer" in graph and "grpo_cli.training.pipeline" in graph["grpo_cli.training.trainer"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_the_cycles_the_layout_had():
    graph = {"grpo_cli.a": {"grpo_cli.b"}, "grpo_cli.b": {"grpo_cli.a"}, "grpo_cli.c": set()}
    assert cycles(graph) == [["grpo_cli.a", "grpo_cli.b"]]
    # The layout's cycle before it was broken: harbor -> calculator -> base -> loaders -> harbor.
    graph = {
        "grpo_cli.data.harbor": {"grpo_cli.environment.calculator", "grpo_cli.environment"},
        "grpo_cli.environment": set(), "grpo_cli.environment.calculator": {"grpo_cli.environment.base"},
        "grpo_cli.environment.base": {"grpo_cli.data.loaders"}, "grpo_cli.data.loaders": {"grpo_cli.data.harbor"},
    }
    assert cycles(graph) == [sorted(["grpo_cli.data.harbor", "grpo_cli.environment.calculator",
                                     "grpo_cli.environment.base", "grpo_cli.data.loaders"])]
