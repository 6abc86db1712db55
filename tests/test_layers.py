"""The package's layers, kept by tests: the import contract, a dry run without torch or Ray, and
a design document that lists every module."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "w2s_ray"


def lint_imports(where: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    """pyproject.toml's import contract, checked by import-linter over the package on `pythonpath`
    (imports inside functions count: grimp reads every import statement)."""
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], check=False,
                          cwd=where,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pythonpath)})


def test_the_layer_contract_holds():
    """pyproject.toml's layers: each module imports only from the layers below its own."""
    run = lint_imports(ROOT, ROOT)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Contracts: 1 kept, 0 broken." in run.stdout


def test_the_contract_catches_an_upward_import_inside_a_function(tmp_path):
    """The same contract over a copy of the package in which the config imports the sweep inside
    a function body: it must fail, or the test above could pass on a check that sees nothing."""
    copy = tmp_path / "w2s_ray"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "config.py"
    target.write_text(target.read_text() + "\n\ndef _upward():\n    from w2s_ray import sweep  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    run = lint_imports(tmp_path, tmp_path)
    assert run.returncode != 0
    assert "w2s_ray.config is not allowed to import w2s_ray.sweep" in run.stdout


def test_a_dry_run_imports_neither_torch_nor_ray(tmp_path):
    code = ("import json, sys\n"
            "from w2s_ray.cli import main\n"
            f"code = main(['--preset', 'qwen15-scale', '--dry-run', '--storage', {str(tmp_path)!r}])\n"
            "print(json.dumps({'code': code, 'loaded': sorted(m for m in ('torch', 'ray', 'vllm', "
            "'transformers') if m in sys.modules)}))\n")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
    assert "unique stages:" in run.stdout


def test_the_design_document_lists_every_module():
    listed = (ROOT / "docs" / "design.md").read_text()
    layout = listed[listed.index("```\nw2s_ray/"):]
    layout = layout[: layout.index("```", 4)]
    # A folder's modules are listed indented under it ("models/" then "    rungs.py").
    names, folder = set(), ""
    for line in layout.splitlines()[1:]:
        entry = line.split()[0] if line.strip() else ""
        if re.fullmatch(r"[\w/]+/", entry):
            folder = entry if line.startswith("  ") and not line.startswith("    ") else folder
            names.add(entry)
        elif entry.endswith(".py"):
            names.add(f"{folder}{entry}" if line.startswith("    ") else entry)
    assert "capabilities/" in names  # one module per capability, named by its registry
    missing = [rel for path in sorted(PACKAGE.rglob("*.py"))
               if path.name != "__init__.py"
               and not (rel := path.relative_to(PACKAGE).as_posix()).startswith("capabilities/")
               and rel not in names]
    assert not missing, f"docs/design.md's layout does not list {missing}"


def test_the_readme_stays_a_guide():
    """At most 120 lines; timings and their history live in docs/benchmarks.md, dated."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 120
    assert not re.search(r"\b\d+ min \d+ s\b", readme), "timings belong in docs/benchmarks.md"
