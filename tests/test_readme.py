"""README.md's generated blocks are what `python scripts/readme.py` prints, so a figure that no
longer matches the engine (or the baselines), or an edit by hand between the markers, fails here.

Every block is regenerated once per session from fresh run folders in a temporary reports root
(the charts are not compared: they are drawn from the same runs as the blocks beside them).
"""

from __future__ import annotations

import importlib.util

import pytest
from scenarios import REPO

pytestmark = pytest.mark.e2e


def load_script():
    spec = importlib.util.spec_from_file_location("readme_script", REPO / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = load_script()


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> dict[str, str]:
    return script.render(script.Runs(tmp_path_factory.mktemp("readme-reports")))


@pytest.mark.parametrize("name", list(script.BLOCKS))
def test_readme_block_is_what_the_script_prints(generated, name):
    in_readme = script.read_block((REPO / "README.md").read_text(), name)
    assert in_readme == generated[name], f"run `python scripts/readme.py --write` ({name})"


def test_splice_replaces_only_between_markers():
    text = "a\n<!-- readme:x -->\nold\n<!-- /readme:x -->\nb\n"
    assert script.splice(text, {"x": "new\n"}) == text.replace("old", "new")
    with pytest.raises(SystemExit, match="readme:y"):
        script.splice(text, {"y": "new\n"})
