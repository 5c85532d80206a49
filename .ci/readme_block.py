"""Print the fenced code block that follows ``<!-- ci:NAME -->`` in README.md.

.ci/run executes these blocks verbatim, so CI installs and tests exactly as README tells a user.
"""

import re
import sys
from pathlib import Path

name = sys.argv[1]
text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
match = re.search(rf"<!-- ci:{re.escape(name)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
if not match:
    sys.exit(f"README.md has no block marked <!-- ci:{name} -->")
print(match.group(1).strip())
