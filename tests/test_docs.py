"""The docs cannot drift: the configuration reference matches conf/, and relative links resolve.

docs/configuration.md has one heading per YAML file under conf/ (the heading names the file,
e.g. "### `conf/data/file.yaml`"), and under it a table whose first column is the option as a
flattened dotted key in backticks (`path`, `ray.address`, `hydra.sweeper.n_trials`).
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REFERENCE = ROOT / "docs" / "configuration.md"

# Hydra's own bookkeeping (where a run writes, chdir): documented in prose, not per file.
INTERNAL_PREFIXES = ("hydra.run.", "hydra.sweep.", "hydra.job.")

HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
FILE_IN_HEADING = re.compile(r"`(conf/[^`]+\.yaml)`")
ROW_KEY = re.compile(r"^\|\s*`([^`]+)`\s*\|")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _flatten(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def conf_keys(path: Path) -> set[str]:
    """Every option of one YAML file as a dotted path, without `defaults` and `_target_`."""
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    return {k for k in _flatten(data) if k.split(".")[-1] != "_target_"}


def documented() -> dict[str, set[str]]:
    """The options listed under each `conf/...yaml` heading of docs/configuration.md."""
    sections: dict[str, set[str]] = {}
    current, level = None, 0
    for line in REFERENCE.read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            found = FILE_IN_HEADING.search(heading.group(2))
            if found:
                current, level = found.group(1), len(heading.group(1))
                sections.setdefault(current, set())
            elif current and len(heading.group(1)) <= level:
                current = None
            continue
        row = ROW_KEY.match(line)
        if current and row:
            sections[current].add(row.group(1))
    return sections


YAMLS = sorted(p.relative_to(ROOT).as_posix() for p in CONF.rglob("*.yaml"))


def test_every_conf_file_has_a_section():
    missing = sorted(set(YAMLS) - set(documented()))
    extra = sorted(set(documented()) - set(YAMLS))
    assert not missing, f"docs/configuration.md has no section for: {missing}"
    assert not extra, f"docs/configuration.md documents files not in conf/: {extra}"


@pytest.mark.parametrize("name", YAMLS)
def test_reference_matches_conf(name):
    keys = conf_keys(ROOT / name)
    required = {k for k in keys if not k.startswith(INTERNAL_PREFIXES)}
    docs = documented().get(name, set())
    missing = sorted(required - docs)
    extra = sorted(docs - keys)
    assert not missing, f"{name}: options not in docs/configuration.md: {missing}"
    assert not extra, f"{name}: docs/configuration.md lists options that {name} does not have: {extra}"


MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text())
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, in-page anchors
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"
