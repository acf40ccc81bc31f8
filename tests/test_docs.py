"""The documentation's code runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> str:
    return "\n\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


@pytest.mark.slow
def test_the_api_page_example_runs_as_written(tmp_path):
    code = python_blocks(DOCS / "api.md")
    assert "m.train(" in code and "m.resume(" in code and "run.verify()" in code
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed" in done.stdout
    assert (tmp_path / "runs" / "flip-eprop" / "records" / "iter_000005.h5").is_file()
