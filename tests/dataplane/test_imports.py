"""Every module of the data plane and of the contract imports on its own, first, in a fresh interpreter.

A tool, a worker or a test may start from any of them (`python -c "from dataplane.report import …"`);
an import cycle that only bites when one particular module comes first passes every test that
happens to import another module before it, and then breaks a user's process at start."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import configdoc
import dataplane
import dataplane.plugins

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[str]:
    names = []
    for package in (dataplane, dataplane.plugins, configdoc):
        names.append(package.__name__)
        names += [f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)]
    return sorted(set(names) - {"dataplane.__main__"})


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    names = _modules()
    assert "dataplane.report" in names and "dataplane.plugins.rate_limit" in names
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    failed = {}
    for name, process in running.items():
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            failed[name] = err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}"
    assert failed == {}
