"""The layering, enforced over every import in every package, the lazy ones inside functions included:

    contracts <- rewards <- tasks <- infer <- checkpoints <- build <- train <- cli / bench

A module may import its own layer or any layer below it, never one above. vLLM is imported only in
``infer/vllm_engine.py``.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("contracts", "rewards", "tasks", "infer", "checkpoints", "build", "train", "cli")
PACKAGES = {"rewards": "twinloop.rewards", "infer": "twinloop.infer", "checkpoints": "twinloop.checkpoints",
            "train": "twinloop.train", "twinloop": "twinloop", "bench": "bench"}
BOTTOM = {"twinloop", "twinloop.contracts", "twinloop.recipe"}  # import nothing of twinloop's


def layer(module: str) -> str:
    if module in BOTTOM:
        return "contracts"
    for name in ("rewards", "tasks", "infer", "checkpoints", "train"):
        if module == f"twinloop.{name}" or module.startswith(f"twinloop.{name}."):
            return name
    if module == "twinloop.build":
        return "build"
    return "cli"  # twinloop.cli and the command modules beside it, and bench/


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every imported module name in the file, at any depth (relative imports resolved)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")[: -node.level if path.name != "__init__.py" else None]
                base = ".".join(pkg + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in MODULES]
    return out


MODULES = modules()


def test_every_import_follows_the_layer_order():
    assert len(MODULES) > 60  # the walk found the packages
    bad = []
    for module, path in MODULES.items():
        mine = ORDER.index(layer(module))
        for line, target in imports(path, module):
            if not target.startswith("twinloop"):
                continue
            if module in BOTTOM and module != "twinloop":
                bad.append(f"{path.relative_to(REPO)}:{line} {module} is a bottom module but imports {target}")
            elif ORDER.index(layer(target)) > mine:
                bad.append(f"{path.relative_to(REPO)}:{line} {layer(module)} imports {layer(target)} ({target})")
    assert bad == [], "\n".join(bad)


# the one bench that times the Engine against raw vLLM calls must call vLLM itself
VLLM_ALLOWED = {"twinloop.infer.vllm_engine", "bench.engine_overhead"}


def test_vllm_is_imported_only_by_the_vllm_engine():
    bad = [f"{path.relative_to(REPO)}:{line}" for module, path in MODULES.items()
           for line, target in imports(path, module)
           if target.split(".")[0] == "vllm" and module not in VLLM_ALLOWED]
    assert bad == []


def test_the_checker_sees_lazy_imports_and_would_fail(tmp_path):
    """The walk reaches imports inside functions, and an upward edge is reported (the test can fail)."""
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from twinloop.train.gppo import main\n    import vllm\n")
    found = imports(src, "twinloop.rewards.x")
    assert (2, "twinloop.train.gppo") in found and (3, "vllm") in found
    assert ORDER.index(layer("twinloop.train.gppo")) > ORDER.index(layer("twinloop.rewards.x"))
