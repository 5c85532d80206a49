"""README facts that must not drift from the code."""

import re
import subprocess
import sys

from conftest import REPO

from medfm.backbones.table import markdown_table


def test_readme_backbone_table_is_the_generated_one():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- backbones:start -->\n(.*?)\n<!-- backbones:end -->", text, re.S)
    assert block, "README lost its backbone table markers"
    assert block.group(1).strip() == markdown_table().strip(), "run `medfm backbones --markdown` and paste it"


def test_ci_runs_the_readme_blocks():
    for name in ("install", "test"):
        out = subprocess.run([sys.executable, str(REPO / ".ci" / "readme_block.py"), name], capture_output=True, text=True, check=True)
        assert out.stdout.strip(), name
    assert "pip install -e \".[dev]\"" in subprocess.run(
        [sys.executable, str(REPO / ".ci" / "readme_block.py"), "install"], capture_output=True, text=True).stdout
