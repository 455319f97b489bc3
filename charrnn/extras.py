"""The optional extras, and the one line that installs one, right for how charrnn was installed.

The distribution is `charrnn-numpy` on PyPI (the name `charrnn` there belongs to an unrelated
project); the command and the import name are `charrnn`. A checkout installed with
`pip install -e .` is told `pip install -e '<checkout>[EXTRA]'` (`.` when it is the current
folder), an install from a folder that folder, and anything else `pip install 'charrnn-numpy[EXTRA]'`.
pip records how it installed a distribution in its `direct_url.json` (PEP 610), read here.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "charrnn-numpy"


def installed_from() -> tuple[Path | None, bool]:
    """(the folder charrnn was installed from, whether editable); (None, False) for an install from
    an index or none at all (running from a source tree on the path)."""
    records = [d.read_text("direct_url.json") for d in metadata.distributions(name=DISTRIBUTION)]
    try:  # a source tree's own .egg-info (found first from inside it) records nothing: pip's record counts
        direct = next((json.loads(r) for r in records if r), {})
    except ValueError:
        return None, False
    url = direct.get("url", "") if isinstance(direct, dict) else ""
    if "dir_info" not in direct or not url.startswith("file://"):
        return None, False
    return Path(unquote(urlparse(url).path)), bool(direct["dir_info"].get("editable"))


def install_command(extra: str, cwd: Path | None = None) -> str:
    """The pip line that installs `extra` for this installation of charrnn."""
    folder, editable = installed_from()
    if folder is None:
        return f"pip install '{DISTRIBUTION}[{extra}]'"
    cwd = Path.cwd() if cwd is None else cwd
    where = "." if folder.resolve() == cwd.resolve() else str(folder)
    return f"pip install {'-e ' if editable else ''}'{where}[{extra}]'"
