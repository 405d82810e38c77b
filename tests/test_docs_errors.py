"""docs/errors.md's exit-code table is the one forecast/errors.py defines: it cannot drift."""

import re
from pathlib import Path

from forecast.errors import EXIT_CODES

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def test_exit_code_table_matches_the_code():
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", DOC.read_text(), flags=re.M)
    assert {int(code): text for code, text in rows} == EXIT_CODES
