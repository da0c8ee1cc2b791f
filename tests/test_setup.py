"""Setting up a machine: one list of Debian packages (.ci/debian-packages.txt) for CI, `make system-deps`
and the README, and the last line of a test run naming the packages skipped tests wanted."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import _packages_named

ROOT = Path(__file__).parents[1]


def listed_packages() -> list[str]:
    lines = (ROOT / ".ci" / "debian-packages.txt").read_text().splitlines()
    return [name for line in lines for name in line.split("#", 1)[0].split()]


def test_the_list_names_each_package_once_and_the_device_toolchains():
    packages = listed_packages()
    assert len(packages) == len(set(packages))
    for needed in ("gcc", "gcc-arm-none-eabi", "qemu-system-arm", "gcc-riscv64-unknown-elf", "qemu-system-misc",
                   "llvm-14", "libgrpc++-dev"):  # fmt: skip
        assert needed in packages


def test_the_readme_ci_and_make_install_the_same_list():
    readme = (ROOT / "README.md").read_text()
    [line] = re.findall(r"^sudo apt-get install -y (.*)$", readme, flags=re.MULTILINE)
    assert line.split() == listed_packages()
    assert "sed 's/#.*//' .ci/debian-packages.txt" in (ROOT / ".ci" / "run").read_text()
    if shutil.which("make") is None:
        pytest.skip("make not found (Debian package: make)")
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "system-deps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    [install] = [cmd for cmd in dry.stdout.splitlines() if "apt-get install" in cmd]
    assert install.split("apt-get install -y", 1)[1].split() == listed_packages()


@pytest.mark.parametrize(
    "reason, debian, pip",
    [
        ("examples/mcu: arm-none-eabi-gcc not found (Debian packages: make gcc-arm-none-eabi qemu-system-arm)",
         {"make", "gcc-arm-none-eabi", "qemu-system-arm"}, set()),
        ("no C compiler found (cc, gcc or clang); install the Debian package gcc, set CC, or skip", {"gcc"}, set()),
        ("the C++ load generator needs g++: install the Debian packages g++ pkg-config libgrpc++-dev",
         {"g++", "pkg-config", "libgrpc++-dev"}, set()),
        ("tritonserver (nvidia-pytriton) not installed: pip install 'edgernn[serve]'", set(), {"edgernn[serve]"}),
        ("could not import 'torch': No module named 'torch'", set(), {"torch"}),
        ("the model has no chunk graph", set(), set()),
    ],
)  # fmt: skip
def test_skip_reasons_give_the_packages_they_name(reason, debian, pip):
    assert _packages_named(reason) == (debian, pip)
