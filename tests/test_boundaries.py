"""The planes' import boundaries (ARCHITECTURE §1): configdoc and dataplane run without Django."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "dataplane": {"django", "rest_framework", "celery", "controlplane", "config"},
    "configdoc": {"django", "rest_framework", "celery", "controlplane", "config", "dataplane"},
    "controlplane": {"dataplane"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_across_its_boundary(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN[package])
        for path in files
        if imported_modules(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_boundary_scan_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom django.db import models\nimportlib.import_module('celery.app')\n")
    assert imported_modules(sample) == {"os", "django", "celery"}


def test_the_data_plane_requirements_install_no_control_plane_library() -> None:
    lines = (ROOT / "requirements" / "dataplane.txt").read_text().splitlines()
    names = {line.split("==")[0].split("[")[0].strip().lower() for line in lines if line and not line.startswith("#")}
    assert names.isdisjoint({"django", "djangorestframework", "celery", "djangorestframework-simplejwt"})
    assert {"httpx", "sniffio", "uvicorn", "httptools", "pyyaml"} <= names
