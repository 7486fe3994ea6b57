"""Layout rules: import names, torch-free runtime sources, light base dependencies."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pinet": "pinet", "training": "pinet_training", "export": "pinet_export", "runtime": "pinet_runtime"}
RUNTIME_ALLOWED = {"numpy", "PIL", "onnxruntime", "pinet_runtime"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources():
    for folder in (*PACKAGES, "tests", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_bare_folder_imports():
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in _sources()
                 for name in _imports(path) & {"runtime", "export", "training"}]
    assert not offenders, f"import the package names (pinet_runtime, ...), not folders: {offenders}"


# Optional extras a runtime module may import inside its functions only (never at import time).
RUNTIME_OPTIONAL = {"ray.py": {"ray", "pyarrow"}}


def test_runtime_sources_import_only_numpy_pillow_onnxruntime():
    stdlib = set(sys.stdlib_module_names)
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / "runtime").rglob("*.py")
                 for name in _imports(path) - stdlib - RUNTIME_ALLOWED - {"__future__"}
                 - RUNTIME_OPTIONAL.get(path.name, set())]
    assert not offenders, offenders


def test_optional_runtime_extras_are_imported_inside_functions():
    for name, optional in RUNTIME_OPTIONAL.items():
        tree = ast.parse((ROOT / "runtime" / name).read_text())
        # Module level, less the `if TYPE_CHECKING:` blocks (type names only, never run).
        top = [node for node in tree.body
               if not (isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")]
        loaded = {alias.name.split(".")[0] for node in top if isinstance(node, ast.Import) for alias in node.names}
        loaded |= {node.module.split(".")[0] for node in top if isinstance(node, ast.ImportFrom) and node.module}
        assert not loaded & optional, f"runtime/{name} imports {loaded & optional} at import time"


def test_pyproject_declares_the_distribution():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "pinet-iqa"
    assert project["project"]["scripts"]["pinet"] == "pinet.cli.app:main"
    base = " ".join(project["project"]["dependencies"]).lower()
    assert "torch" not in base and "onnx>" not in base and "onnxsim" not in base
    extras = project["project"]["optional-dependencies"]
    assert {"train", "export", "lite", "gpu", "dev", "all"} <= set(extras)
    assert any(req.startswith("torch") and "<2.15" in req for req in extras["train"])
    mapping = project["tool"]["setuptools"]["package-dir"]
    assert mapping == {value: key for key, value in PACKAGES.items()}
    assert "--import-mode=importlib" in project["tool"]["pytest"]["ini_options"]["addopts"]
