"""The package's layout keeps its promises: read from the source's imports, nothing is run.

* the module maps (``ray_on_spark/__init__.py`` and each package's ``__init__``) name every module;
* neither direction imports the other, and the data package imports neither;
* the runtime, which runs on every executor, imports the standard library, psutil and itself only;
* pyspark's JVM and Ray's internals are each reached from one module.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys
from typing import Iterator, List, Tuple

import pytest

import ray_on_spark

PACKAGE = pathlib.Path(ray_on_spark.__file__).parent


def _modules() -> List[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> Iterator[Tuple[str, int]]:
    """Every module ``path`` imports (at any level, lazily too), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:  # "from ray_on_spark import spark_env" imports a module too
                yield f"{node.module}.{alias.name}", node.lineno


def _code_text(path: pathlib.Path) -> str:
    """The module's code without comments and docstrings (a docstring may name what it avoids)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def test_every_module_is_named_in_its_packages_module_map():
    missing = []
    for package in [p for p in _modules() if p.name == "__init__.py"]:
        doc = ast.get_docstring(ast.parse(package.read_text())) or ""
        for child in sorted(package.parent.iterdir()):
            name = child.stem if child.suffix == ".py" else child.name
            is_module = child.suffix == ".py" and child.name != "__init__.py"
            is_package = child.is_dir() and (child / "__init__.py").exists()
            if (is_module or is_package) and not re.search(rf"``{re.escape(name)}/?``", doc):
                missing.append(f"{_dotted(package)}: {name}")
    assert not missing, f"modules missing from their package's module map: {missing}"


@pytest.mark.parametrize("package, forbidden", [
    ("on_spark", ("ray_on_spark.on_ray",)),
    ("on_ray", ("ray_on_spark.on_spark",)),
    ("data", ("ray_on_spark.on_spark", "ray_on_spark.on_ray")),
    ("runtime", ("ray_on_spark.on_spark", "ray_on_spark.on_ray", "ray_on_spark.data")),
])
def test_packages_do_not_import_the_other_direction(package, forbidden):
    bad = [f"{p.relative_to(PACKAGE)}:{line} imports {name}"
           for p in _modules() if p.relative_to(PACKAGE).parts[0] == package
           for name, line in _imports(p) if name.startswith(forbidden)]
    assert not bad, bad


def test_the_runtime_imports_only_the_standard_library_psutil_and_itself():
    allowed_third_party = {"psutil"}
    bad = []
    for p in _modules():
        if p.relative_to(PACKAGE).parts[0] != "runtime":
            continue
        for name, line in _imports(p):
            top = name.split(".")[0]
            if name.startswith("ray_on_spark"):
                if not name.startswith("ray_on_spark.runtime"):
                    bad.append(f"{p.name}:{line} {name}")
            elif top not in sys.stdlib_module_names and top not in allowed_third_party and top != "__future__":
                bad.append(f"{p.name}:{line} {name}")
    assert not bad, bad


@pytest.mark.parametrize("pattern, seam", [
    (r"\._(jvm|jsc|jdf|gateway|jrdd|java_resource_profile|ensure_initialized)\b", "spark_env.py"),
    (r"\bray\.(_private|_raylet|data\._internal)\b", "_ray.py"),
])
def test_foreign_internals_are_reached_through_one_module(pattern, seam):
    users = sorted(str(p.relative_to(PACKAGE)) for p in _modules() if re.search(pattern, _code_text(p)))
    assert users == [seam], f"{pattern} is used outside {seam}: {users}"


def test_the_supervisor_imports_neither_spark_nor_ray():
    import subprocess

    code = ("import sys, ray_on_spark.runtime.supervisor, ray_on_spark.runtime.supervised; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyspark')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_test_modules_have_unique_basenames_across_test_directories():
    """The test directories are not packages: pytest imports each test module by its basename,
    so two test files of one name in tests/unit and tests/integration stop collection."""
    import collections
    import pathlib

    tests = pathlib.Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in tests.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], names
