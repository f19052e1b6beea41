"""The lock: requirements/lock.txt pins everything scripts/env.sh installs, within
pyproject.toml's ranges, and this environment was installed from it."""

from __future__ import annotations

import re
import sysconfig
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

LOCK = REPO / "requirements" / "lock.txt"


def locked() -> dict[str, str]:
    """Package name -> pinned version."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, sep, version = spec.partition("==")
            assert sep, f"{LOCK}: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def installed_extras() -> list[str]:
    text = (REPO / "scripts" / "env.sh").read_text()
    (extras,) = re.findall(r'^PROJECT_EXTRAS="([^"]+)"$', text, flags=re.MULTILINE)
    return extras.split(",")


def test_the_lock_pins_every_requirement_within_its_range() -> None:
    """Fails when pyproject.toml or requirements/setup.in changed and `./scripts/lock` was
    not run: a new or widened requirement would be installed unpinned, or refused."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in installed_extras():
        wanted += project["optional-dependencies"][extra]
    setup = (REPO / "requirements" / "setup.in").read_text().splitlines()
    wanted += [line for line in setup if line.strip() and not line.startswith("#")]
    pins = locked()
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {LOCK.name}; run ./scripts/lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {req.name}=={pins[name]}, outside {text!r}; run ./scripts/lock"
        )


def test_this_environment_was_installed_from_the_lock() -> None:
    """The packages in this environment's site-packages (not copies vendored inside one, such
    as setuptools', which it puts on sys.path once imported)."""
    pins = locked()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions(
            path=sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        )
    }
    assert not set(pins) - set(installed), "locked but not installed"
    different = {n: (installed[n], v) for n, v in pins.items() if installed[n] != v}
    assert not different, f"installed (version, locked version): {different}"
