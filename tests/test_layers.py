"""The import structure of ``edgefusion``: no cycles, and the layers import in one direction.

Imports are read with ``ast`` from every module under ``src/edgefusion`` (those inside functions
too: an import moved into a function still makes a dependency), never by importing anything.
The rules:

- no cycle between modules, and none between packages (``edgefusion.X``, a subpackage or a
  top-level module; the command-line modules together form the layer above them all): a cycle
  of packages is a layering mistake even when no two files form one;
- ``edgefusion.pipeline`` is the bottom layer of inference: it imports only the shared top-level
  modules (errors, inputs, limits, provenance, ...). Packages above it plug into its registries
  instead of being imported by it. W8A16 is such a plug-in: ``edgefusion.quant`` imports the
  pipeline layer and registers the ``w8a16`` backend; the pipeline layer never imports quant;
- the toy world plugs in the same way (model names, its evaluator, and its captioner, prompt
  grammar, renderer and curation scorer in the data stages' registries), so only
  ``edgefusion/toy/`` itself, the command-line modules (``edgefusion.cli`` and
  ``edgefusion.*.cli``, which import it so that it registers) and the demo import
  ``edgefusion.toy``; the toy world uses the stages, never the reverse.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "edgefusion"

#: Packages the inference layer must not import (everything above it).
ABOVE_PIPELINE = (
    *("arch", "bench", "data", "eval", "export", "quant", "review", "tiling", "toy", "train"),
    *("cli", "demo", "generate"),
)
#: Modules besides the command line that may import the toy world: the demo runs its models.
TOY_USERS = frozenset({f"{ROOT}.demo"})


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the project."""
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path) -> list[str]:
    """Every dotted name an import statement of ``path`` refers to, relative ones made absolute;
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def module_graph() -> dict[str, set[str]]:
    """``{module: project modules it imports}``."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            while name and name not in modules:  # a name defined in a module: that module
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def package_of(module: str) -> str:
    """``edgefusion.X`` for any module at or below it (the root package is its own)."""
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> str:
    """The package of ``module``, except that every command-line module (``edgefusion.cli``,
    ``edgefusion.X.cli``) belongs to the command line, the layer above all packages."""
    return f"{ROOT}.cli" if is_command_line(module) else package_of(module)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``{package: packages it imports}``, the command line counted as one layer of its own: a
    stage's command may import the toy world, which imports the stage."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        packages[layer_of(module)] |= {layer_of(t) for t in targets} - {layer_of(module)}
    return dict(packages)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def importers_of(graph: dict[str, set[str]], prefix: str) -> dict[str, list[str]]:
    """``{module: what it imports of prefix}`` for modules outside ``prefix`` that import it."""
    found = {}
    for module, targets in graph.items():
        if package_of(module) == prefix:
            continue
        hits = sorted(t for t in targets if t == prefix or t.startswith(prefix + "."))
        if hits:
            found[module] = hits
    return found


def is_command_line(module: str) -> bool:
    return module == f"{ROOT}.cli" or module.endswith(".cli")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return module_graph()


def test_the_graph_sees_imports_inside_functions(graph):
    # toy.plugins imports the toy metrics only inside functions (so registering loads no torch)
    assert "edgefusion.toy.metrics" in graph["edgefusion.toy.plugins"]


def test_the_cycle_finder_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "modules import each other: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages(graph):
    packages = package_graph(graph)
    cycle = find_cycle(packages)
    if cycle is not None:
        steps = [f"{a} -> {b} ({', '.join(_modules_behind(graph, a, b))})" for a, b in _steps(cycle)]
        pytest.fail("packages import each other: " + "; ".join(steps))


def _steps(cycle: list[str]) -> list[tuple[str, str]]:
    return list(zip(cycle[:-1], cycle[1:], strict=True))


def _modules_behind(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """The modules of package ``source`` that import package ``target``."""
    return sorted(
        module
        for module, targets in graph.items()
        if layer_of(module) == source and any(layer_of(t) == target for t in targets)
    )


def test_the_inference_layer_imports_nothing_above_it(graph):
    above = {f"{ROOT}.{name}" for name in ABOVE_PIPELINE}
    wrong = {
        module: sorted(t for t in targets if package_of(t) in above)
        for module, targets in graph.items()
        if package_of(module) == f"{ROOT}.pipeline"
    }
    wrong = {module: targets for module, targets in wrong.items() if targets}
    assert not wrong, f"edgefusion.pipeline must not import the layers above it: {wrong}"


def test_w8a16_is_a_plug_in_of_the_inference_layer(graph):
    packages = package_graph(graph)
    assert f"{ROOT}.pipeline" in packages[f"{ROOT}.quant"]  # quant -> pipeline ...
    assert f"{ROOT}.quant" not in packages[f"{ROOT}.pipeline"]  # ... and never back


def wrong_toy_importers(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """The modules outside ``edgefusion/toy/`` that import it, but for the command line and the demo."""
    importers = importers_of(graph, f"{ROOT}.toy")
    return {m: t for m, t in importers.items() if not is_command_line(m) and m not in TOY_USERS}


def test_only_the_toy_world_the_command_line_and_the_demo_import_it(graph):
    wrong = wrong_toy_importers(graph)
    assert not wrong, f"only toy/, the command-line modules and the demo may import edgefusion.toy: {wrong}"


def test_the_toy_world_check_fails_on_a_stage_that_imports_it(graph):
    planted = {**graph, f"{ROOT}.data.caption": graph[f"{ROOT}.data.caption"] | {f"{ROOT}.toy.curation"}}
    assert wrong_toy_importers(planted) == {f"{ROOT}.data.caption": [f"{ROOT}.toy.curation"]}
    for allowed in (f"{ROOT}.data.cli", f"{ROOT}.cli", f"{ROOT}.demo", f"{ROOT}.toy.plugins"):
        assert allowed not in wrong_toy_importers({**planted, allowed: {f"{ROOT}.toy.world"}})


def test_the_toy_world_plugs_into_the_data_stages_not_the_reverse(graph):
    packages = package_graph(graph)
    assert f"{ROOT}.data" in packages[f"{ROOT}.toy"]  # toy -> data (its curation plug-ins) ...
    assert f"{ROOT}.toy" not in packages[f"{ROOT}.data"]  # ... and never back


def test_plug_ins_register_on_import():
    import edgefusion.export  # noqa: F401
    import edgefusion.pipeline.load  # noqa: F401  (the built-in torch backend)
    import edgefusion.quant  # noqa: F401
    import edgefusion.toy  # noqa: F401
    from edgefusion.eval.evaluators import get_evaluator
    from edgefusion.pipeline.registry import get_backend, model_source
    from edgefusion.pipeline.sources import resolve_model_path

    assert model_source("toy:teacher") is not None
    assert resolve_model_path("toy:teacher").name == "teacher"
    names = ["torch", "w8a16", "onnxruntime"]
    assert [get_backend(name).name for name in names] == names
    assert get_backend("w8a16").claims is not None
    assert get_evaluator("toy").name == "toy"


def test_the_toy_world_registers_its_curation_tools():
    import pickle

    import edgefusion.toy  # noqa: F401
    from edgefusion.data.registry import CAPTIONERS, PROMPT_SOURCES, RENDERERS, SCORERS

    assert len(PROMPT_SOURCES.get("toy")(3, 0)) == 3
    for table, name in ((CAPTIONERS, "toy"), (RENDERERS, "toy:render"), (SCORERS, "toy")):
        plugin = table.find(name)
        assert plugin is not None and pickle.loads(pickle.dumps(plugin)) == plugin  # workers get it
