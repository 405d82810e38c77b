"""The package's layers hold: import-linter's contracts in pyproject.toml (no import cycle between
the modules of a package, the package never imports the Hydra plugins, the layer order), checked
in process as `make lint` checks them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept(monkeypatch, capsys):
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(ROOT)
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    assert "broken" not in out.lower().replace("0 broken", "")
