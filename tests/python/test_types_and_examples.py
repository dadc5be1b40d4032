"""The type stubs are complete enough for mypy --strict on the examples, and they are real:
a misuse is caught. The examples run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "examples" / n for n in ("quickstart.py", "async_service.py", "fastapi_app.py")]


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_mypy_strict_passes_on_the_examples() -> None:
    r = mypy(*map(str, EXAMPLES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_misuse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import couponcore\ne = couponcore.open(':memory:')\nr = e.issue('not-an-id', 42)\nx: str = r.seq\n")
    r = mypy(str(bad))
    assert r.returncode == 1
    assert "issue" in r.stdout and "[arg-type]" in r.stdout and "[assignment]" in r.stdout


def test_examples_run(tmp_path: Path) -> None:
    for name in ("quickstart.py", "async_service.py"):
        r = subprocess.run(
            [sys.executable, str(REPO / "examples" / name)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
