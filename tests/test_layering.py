"""The flow zoo → probe engine → analyses → reports, with the orchestration (probe.study, probe.cli) above.

Checked twice: statically, over every import statement of every file (also those inside
functions), and at run time, by importing each package in a fresh interpreter and looking at what
it loaded.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("zoo", "probe", "analyses", "reports")

# What each part may import, besides itself. "engine" is probe/ without its cli/ and study/ subpackages.
ALLOWED = {
    "zoo": set(),
    "engine": {"zoo"},
    "analyses": {"zoo"},
    "reports": {"zoo"},
    "study": {"zoo", "engine", "analyses", "reports"},
    "cli": {"zoo", "engine", "analyses", "reports", "study"},
}


def part_of_module(module: str) -> str | None:
    """The part of the flow a dotted module name belongs to, or None for third-party modules."""
    top = module.split(".")[0]
    if top not in OUR_PACKAGES:
        return None
    if top == "probe":  # python -m probe (probe/__main__.py) is the command line
        second = module.split(".")[1] if "." in module else ""
        return {"cli": "cli", "__main__": "cli", "study": "study"}.get(second, "engine")
    return top


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (``from a import b`` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if part_of_module(name)}


def source_files() -> dict[str, Path]:
    return {module_name(path): path for package in OUR_PACKAGES for path in (ROOT / package).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """File-level graph: module -> the modules of ours it imports (importing a.b also runs a)."""
    files = source_files()
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in imported_modules(path):
            parts = imported.split(".")
            for depth in range(1, len(parts) + 1):  # a.b.c runs a, a.b and a.b.c
                if ".".join(parts[:depth]) in files:
                    targets.add(".".join(parts[:depth]))
        graph[name] = targets - {name}
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_every_import_goes_downstream():
    wrong = []
    for name, path in source_files().items():
        part = part_of_module(name)
        for imported in imported_modules(path):
            target = part_of_module(imported)
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(ROOT)} ({part}) imports {imported} ({target})")
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_between_packages():
    graph = import_graph()
    crossing = [sorted(c) for c in strongly_connected_components(graph) if len({part_of_module(m) for m in c}) > 1]
    assert not crossing, f"import cycles across parts of the flow: {crossing}"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"zoo": {"probe"}, "probe": {"analyses"}, "analyses": {"probe"}, "reports": set()}
    assert sorted(map(sorted, strongly_connected_components(graph))) == [["analyses", "probe"], ["reports"], ["zoo"]]
    assert part_of_module("probe.study._demo") == "study" and part_of_module("probe._record") == "engine"
    assert part_of_module("probe") == "engine" and part_of_module("torch.nn") is None


# package imported in a fresh interpreter -> prefixes of our modules it must not load
FORBIDDEN_AT_RUN_TIME = {
    "zoo": ("probe", "analyses", "reports"),
    "probe": ("probe.cli", "probe.study", "analyses", "reports"),
    "analyses": ("probe", "reports"),
    "reports": ("probe", "analyses"),
}


def test_importing_a_package_loads_nothing_upstream():
    # one fresh interpreter per package, started together (each mostly waits for torch to import)
    code = "import json, sys, {}; print(json.dumps(sorted(sys.modules)))"
    runs = {package: subprocess.Popen([sys.executable, "-c", code.format(package)], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for package in FORBIDDEN_AT_RUN_TIME}
    wrong = []
    for package, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, f"import {package} failed: {err}"
        forbidden = FORBIDDEN_AT_RUN_TIME[package]
        loaded = [m for m in json.loads(out) if any(m == p or m.startswith(p + ".") for p in forbidden)]
        wrong += [f"import {package} loaded {loaded}"] if loaded else []
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["zoo", "probe", "probe.study", "probe.cli", "analyses", "reports"])
def test_package_faces_say_what_they_are_for_and_export_what_they_list(package):
    module = __import__(package, fromlist=["_"])
    assert module.__doc__ and len(module.__doc__.strip()) > 80
    exported = getattr(module, "__all__", None)
    assert exported, f"{package} has no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names {missing}, which it lacks"
    assert len(set(exported)) == len(exported)
    text = Path(module.__file__).read_text().lower()
    assert "owner" not in text and "(issue" not in text, f"{package}/__init__.py speaks of who edits what"


def test_public_names_of_the_readme_still_work():
    import analyses
    import probe
    import zoo

    for module, names in [
        (zoo, ["train", "load", "load_dataset", "create_model", "list_models", "knn_predict", "unknown_name_error"]),
        (probe, ["record", "Recording", "Reducer", "MultiLayerReducer", "TopK", "describe_layers", "REDUCTIONS"]),
        (analyses, ["rdm", "cka", "top_patches", "knn_accuracy", "linear_probe", "StreamingCKA", "receptive_field"]),
    ]:
        assert all(callable(getattr(module, name)) or name == "REDUCTIONS" for name in names)
    assert analyses.StreamingCKA.__mro__[1] is probe.MultiLayerReducer
