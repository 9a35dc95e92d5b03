"""The README stands on its own: it names no file outside the repository, and every repository path it
names exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_names_no_file_outside_the_repository():
    for outside in ("REFERENCE.md", "../", "shared/", "/work/"):
        assert outside not in README, outside


def test_every_repository_path_the_readme_names_exists():
    prefixes = ("tekapbench/", "suites/", "tests/", "examples/", "docs/", "results/baselines/", "results/paper/")
    named = {m for m in re.findall(r"`([A-Za-z0-9_./<>*-]+)`", README) if m.startswith(prefixes)}
    named = {m.split("::")[0] for m in named if "<" not in m and "*" not in m}
    assert len(named) > 10
    missing = sorted(m for m in named if not (ROOT / m).exists())
    assert not missing, missing
