"""The layout of `decode/`: its imports point down the layers (rules, preparation, engines, front door) and
never go round in a circle, and the paths users type keep working."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DECODE = ROOT / "decode"

# Each module's layer, by its place in the tree; a module may import its own layer or a lower one.
LAYERS = {"rules": 0, "prepare": 1, "hf": 2, "reprompt": 2, "openai_client": 2, "vllm": 2}
FRONT = 3  # decode/__init__, __main__, generate, cli and the re-export modules beside them
LAYER_NAMES = {0: "rules", 1: "prepare", 2: "engines", 3: "front door"}
# What the rules may not import: an engine, or transformers' model loading.
NOT_IN_RULES = ("vllm", "httpx", "httpcore")
LOADERS = ("AutoModelForCausalLM", "AutoModel", "AutoTokenizer", "AutoConfig", "GenerationConfig")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 2 and (DECODE / f"{parts[1]}.py").is_file():
        return FRONT
    if len(parts) == 1:
        return FRONT
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module}: not in a layer; put it under one of {sorted(LAYERS)} or list it here")
    return LAYERS[parts[1]]


def imports_of(path: Path, modules: set[str]) -> tuple[set[str], list[tuple[str, str]]]:
    """The decode modules `path` imports (relative and absolute, lazy ones inside functions included), and
    the (module, names) of every import from outside decode."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    outside: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            outside += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] != "decode"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "decode":
                outside.append((source, ",".join(alias.name for alias in node.names)))
                continue
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `from .x import name`: the module x, not name
                target = target.rpartition(".")[0]
            if target and target != here:
                found.add(target)
    return found, outside


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, str]]]]:
    paths = {module_name(p): p for p in DECODE.rglob("*.py")}
    graph, outside = {}, {}
    for name, path in paths.items():
        graph[name], outside[name] = imports_of(path, set(paths))
    return graph, outside


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module names, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_decode_has_no_import_circle() -> None:
    graph, _ = import_graph()
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph) or [])}"


def test_find_cycle_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_decode_imports_point_down_the_layers() -> None:
    graph, _ = import_graph()
    upward = [
        f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target} ({LAYER_NAMES[layer_of(target)]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_rules_import_no_engine_and_no_model_loading() -> None:
    _, outside = import_graph()
    found = [
        f"{module} imports {source} {names}".rstrip()
        for module, imports in sorted(outside.items())
        if layer_of(module) == 0
        for source, names in imports
        if source.split(".")[0] in NOT_IN_RULES
        or (source.split(".")[0] == "transformers" and any(n in LOADERS for n in names.split(",")))
    ]
    assert not found, "\n".join(found)


def test_every_decode_package_is_installed() -> None:
    """pyproject.toml lists packages one by one: a subpackage missing there is left out of the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in DECODE.rglob("__init__.py")}
    assert packages <= listed, f"not in pyproject.toml's packages: {sorted(packages - listed)}"


def test_public_paths() -> None:
    import decode
    from decode.openai_client import CompletionsClient
    from decode.request_args import from_request_args, to_request_args

    for name in decode.__all__:
        assert getattr(decode, name) is not None, name
    assert CompletionsClient.__module__ == "decode.openai_client.client"
    fmt = decode.get_format("s1")
    budget = decode.Budget(max_thinking_tokens=8)
    assert from_request_args(to_request_args(fmt, budget)) == (fmt, budget)


def test_vllm_processor_path_and_entry_point() -> None:
    pytest.importorskip("vllm")
    import decode.vllm
    from decode.vllm import QUALIFIED_NAME, VLLMBudgetForcingProcessor

    module, _, name = QUALIFIED_NAME.partition(":")
    assert getattr(sys.modules[module], name) is VLLMBudgetForcingProcessor
    assert f"{VLLMBudgetForcingProcessor.__module__}:{VLLMBudgetForcingProcessor.__qualname__}" == QUALIFIED_NAME
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["vllm.logits_processors"]["budget_forcing"] == QUALIFIED_NAME
    assert decode.vllm.VLLMBudgetForcingProcessor is VLLMBudgetForcingProcessor


def test_python_m_decode_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "decode", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "--backend" in done.stdout
