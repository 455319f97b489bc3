"""Every missing-extra hint is one pip line that works for the installation at hand: an editable
checkout, an install from a folder, or the published distribution (`charrnn-numpy`: the name
`charrnn` on PyPI is another project's)."""

import json
import tomllib
from pathlib import Path

import pytest

from charrnn import extras


class Installed:
    def __init__(self, record):
        self.record = record

    def read_text(self, name):
        return None if self.record is None else json.dumps(self.record) if name == "direct_url.json" else None


@pytest.mark.parametrize("records, cwd, line", [
    ([{"dir_info": {"editable": True}, "url": "file:///home/me/charrnn"}], "/home/me/charrnn", "pip install -e '.[plot]'"),
    ([{"dir_info": {"editable": True}, "url": "file:///home/me/charrnn"}], "/tmp", "pip install -e '/home/me/charrnn[plot]'"),
    ([None, {"dir_info": {}, "url": "file:///home/me/my%20code"}], "/tmp", "pip install '/home/me/my code[plot]'"),
    ([{"archive_info": {}, "url": "https://files.example/charrnn_numpy-0.1.0.whl"}], "/tmp", "pip install 'charrnn-numpy[plot]'"),
    ([None], "/tmp", "pip install 'charrnn-numpy[plot]'"),
    ([], "/tmp", "pip install 'charrnn-numpy[plot]'"),
], ids=["editable, here", "editable, elsewhere", "a folder (after a source tree's own egg-info)", "a wheel", "no record",
        "not installed"])
def test_the_hint_fits_how_charrnn_was_installed(monkeypatch, records, cwd, line):
    monkeypatch.setattr(extras.metadata, "distributions", lambda name: [Installed(r) for r in records])
    assert extras.install_command("plot", cwd=Path(cwd)) == line


def test_the_published_name_is_the_distribution_and_every_hinted_extra_exists():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert project["name"] == extras.DISTRIBUTION
    assert project["scripts"] == {"charrnn": "charrnn.launch:main"}
    hinted = {"mkl", "mpi", "serve", "safetensors", "onnx", "shakespeare", "plot"}
    assert hinted <= set(project["optional-dependencies"])
