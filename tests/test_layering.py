"""The layering is one-way: the engine uses no method, and runs, analysis, lm-eval and the
command line reach methods only through the registry, never a method's folder by name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD_FOLDERS = sorted(p.name for p in (ROOT / "decoders").iterdir() if (p / "__init__.py").is_file())


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(*parts: str) -> list[Path]:
    return [p for part in parts for p in ((ROOT / part).rglob("*.py") if (ROOT / part).is_dir() else [ROOT / part])]


def test_method_folders_exist_and_are_found():
    assert {"redumix", "dera", "self_consistency"} <= set(METHOD_FOLDERS)


def test_runs_analysis_lm_eval_and_the_cli_never_import_a_method_folder():
    scanned = _modules("harness/runs", "harness/analysis", "harness/lmeval", "harness/cli.py", "harness/engine",
                       "harness/methods")
    assert len(scanned) > 40
    for path in scanned:
        for name in _imports(path):
            assert not any(name == f"decoders.{m}" or name.startswith(f"decoders.{m}.") for m in METHOD_FOLDERS), \
                f"{path.relative_to(ROOT)} imports {name}"


def test_the_engine_uses_no_method():
    for path in _modules("harness/engine"):
        assert not any(n.startswith(("harness.methods", "harness.runs", "harness.analysis")) for n in _imports(path)), \
            path.relative_to(ROOT)
