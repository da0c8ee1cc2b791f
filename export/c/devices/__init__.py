"""Devices the generated C is measured on: a named profile per core (toolchain and flags, the emulator
and board, a typical clock, FPU and DSP/vector instructions), the bare-metal start-up code and linker
scripts in ``firmware/``, and ``bench_device``: instructions, estimated cycles, flash, RAM and stack of one
step under QEMU (docs/devices.md).

==============  ======================  ==============================  =====================
device          core (ISA)              emulator, board                 typical clock
==============  ======================  ==============================  =====================
cortex-m0plus   Cortex-M0+ (ARMv6-M)    qemu-system-arm ``microbit``     48 MHz
cortex-m3       Cortex-M3 (ARMv7-M)     qemu-system-arm ``mps2-an385``   72 MHz
cortex-m4       Cortex-M4F (ARMv7E-M)   qemu-system-arm ``mps2-an386``   80 MHz
cortex-m7       Cortex-M7 (ARMv7E-M)    qemu-system-arm ``mps2-an500``   216 MHz
cortex-m33      Cortex-M33 (ARMv8-M)    qemu-system-arm ``mps2-an505``   64 MHz
cortex-m55      Cortex-M55 (ARMv8.1-M)  qemu-system-arm ``mps3-an547``   160 MHz
rv32imc         RV32IMC                 qemu-system-riscv32 ``virt``    160 MHz
rv32imafc       RV32IMAFC               qemu-system-riscv32 ``virt``    320 MHz
aarch64         Cortex-A53 (ARMv8-A)    qemu-aarch64 (Linux user mode)  1200 MHz
==============  ======================  ==============================  =====================
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgernn.runtime.errors import InputError


class ToolchainMissing(InputError):
    """A compiler or emulator a device needs is not installed (the message names the Debian packages)."""


@dataclass(frozen=True)
class Board:
    """An emulated board: QEMU's machine name and where code/constants ("flash") and data/stack go."""

    machine: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    note: str = ""
    vectors_origin: int | None = None  # where the core reads its vector table, when not at the code


@dataclass(frozen=True)
class Device:
    """One device profile. ``mca``: llvm-mca's (triple, cpu) scheduling model, or None where llvm-mca has
    none (the Cortex-M0+: its TRM's timings); ``branch_penalty``: cycles a taken branch adds on a core without
    branch prediction (its TRM), 0 where the core predicts branches."""

    name: str
    core: str
    isa: str
    parts: str
    kind: str  # "cortex-m", "riscv" or "linux"
    compiler: str
    cflags: tuple[str, ...]
    emulator: str
    boards: tuple[Board, ...]
    clock_mhz: float
    fpu: str
    simd: str
    packages: tuple[str, ...]
    mca: tuple[str, str] | None
    branch_penalty: int
    emulator_args: tuple[str, ...] = ()

    @property
    def bare_metal(self) -> bool:
        return self.kind != "linux"

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.compiler, self.emulator)

    def missing_tools(self) -> list[str]:
        """The tools this device needs that are not on PATH."""
        return [tool for tool in self.tools if shutil.which(tool) is None]

    def require_tools(self) -> None:
        """Raise ToolchainMissing naming the Debian packages when a tool is missing."""
        missing = self.missing_tools()
        if missing:
            raise ToolchainMissing(
                f"device {self.name}: {', '.join(missing)} not found; install the Debian packages "
                f"{' '.join(self.packages)}"
            )

    def describe(self) -> dict:
        return {
            "device": self.name,
            "core": self.core,
            "isa": self.isa,
            "parts": self.parts,
            "compiler": " ".join((self.compiler, *self.cflags)),
            "emulator": self.emulator,
            "board": self.boards[0].machine if self.boards else None,
            "clock_mhz": self.clock_mhz,
            "fpu": self.fpu,
            "simd": self.simd,
        }


ARM_PACKAGES = ("gcc-arm-none-eabi", "qemu-system-arm")
RISCV_PACKAGES = ("gcc-riscv64-unknown-elf", "qemu-system-misc")
MIB = 1024 * 1024
MPS2 = dict(flash_origin=0x0, flash_bytes=4 * MIB, ram_origin=0x20000000, ram_bytes=4 * MIB)
# The Cortex-M0+ runs on QEMU's micro:bit (an nRF51, a Cortex-M0: the same ARMv6-M instructions) when the
# program fits its 256 KiB of flash and 16 KiB of RAM; a larger one runs, still built for ARMv6-M, on the
# mps2-an385 (a Cortex-M3 executes ARMv6-M code instruction for instruction).
MICROBIT = Board("microbit", 0x0, 256 * 1024, 0x20000000, 16 * 1024)
MPS2_FOR_ARMV6M = Board(
    "mps2-an385", note="ARMv6-M code on the Cortex-M3 board (too big for the micro:bit)", **MPS2
)
# The ARMv8-M boards start in the Secure state: code at the secure alias of SSRAM (an505) or of the
# ITCM (an547), data in RAM behind no protection controller.
AN505 = Board("mps2-an505", 0x10000000, 4 * MIB, 0x80000000, 16 * MIB)
AN547 = Board("mps3-an547", 0x10000000, 512 * 1024, 0x70000000, 16 * MIB)
AN547_DDR = Board(
    "mps3-an547", 0x70000000, 16 * MIB, 0x71000000, 16 * MIB, "code in DDR (too big for the ITCM)", 0x10000000
)
RISCV_VIRT = Board("virt", 0x80000000, 64 * MIB, 0x84000000, 64 * MIB)

_DEVICES = (
    Device("cortex-m0plus", "Cortex-M0+", "ARMv6-M", "RP2040, STM32G0/L0, SAMD21", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"), "qemu-system-arm",
           (MICROBIT, MPS2_FOR_ARMV6M), 48.0, "none (soft float)", "none", ARM_PACKAGES, None, 1),
    Device("cortex-m3", "Cortex-M3", "ARMv7-M", "STM32F1/F2, LPC17xx", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), "qemu-system-arm",
           (Board("mps2-an385", **MPS2),), 72.0, "none (soft float)", "none", ARM_PACKAGES,
           ("thumbv7m-none-eabi", "cortex-m3"), 1),
    Device("cortex-m4", "Cortex-M4F", "ARMv7E-M", "STM32F4/L4/G4, nRF52, K64", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
           "qemu-system-arm", (Board("mps2-an386", **MPS2),), 80.0, "single precision (FPv4-SP)",
           "DSP (SIMD32)", ARM_PACKAGES, ("thumbv7em-none-eabi", "cortex-m4"), 1),
    Device("cortex-m7", "Cortex-M7", "ARMv7E-M", "STM32F7/H7, i.MX RT1060", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
           "qemu-system-arm", (Board("mps2-an500", **MPS2),), 216.0, "single precision (FPv5-SP)",
           "DSP (SIMD32)", ARM_PACKAGES, ("thumbv7em-none-eabi", "cortex-m7"), 0),
    Device("cortex-m33", "Cortex-M33", "ARMv8-M Mainline", "STM32L5/U5, nRF5340, LPC55S", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
           "qemu-system-arm", (AN505,), 64.0, "single precision (FPv5-SP)", "DSP (SIMD32)", ARM_PACKAGES,
           ("thumbv8m.main-none-eabi", "cortex-m33"), 1),
    Device("cortex-m55", "Cortex-M55", "ARMv8.1-M Mainline", "Alif Ensemble, Corstone-300", "cortex-m",
           "arm-none-eabi-gcc", ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"), "qemu-system-arm",
           (AN547, AN547_DDR), 160.0, "single and half precision (FPv5)", "DSP (SIMD32) and Helium (MVE)",
           ARM_PACKAGES, ("thumbv8.1m.main-none-eabi", "cortex-m55"), 0),
    Device("rv32imc", "RV32IMC", "RV32IMC", "ESP32-C3, CH32V3, GD32VF103 class", "riscv",
           "riscv64-unknown-elf-gcc", ("-march=rv32imc_zicsr", "-mabi=ilp32"), "qemu-system-riscv32",
           (RISCV_VIRT,), 160.0, "none (soft float)", "none", RISCV_PACKAGES, ("riscv32", "sifive-e31"), 0),
    Device("rv32imafc", "RV32IMAFC", "RV32IMAFC", "ESP32-P4, GD32VW553, BL616 class", "riscv",
           "riscv64-unknown-elf-gcc", ("-march=rv32imafc_zicsr", "-mabi=ilp32f"), "qemu-system-riscv32",
           (RISCV_VIRT,), 320.0, "single precision (F)", "none", RISCV_PACKAGES, ("riscv32", "sifive-e76"), 0),
    Device("aarch64", "Cortex-A53", "ARMv8-A", "Raspberry Pi 3, i.MX 8M class Linux", "linux",
           "aarch64-linux-gnu-gcc", ("-static",), "qemu-aarch64", (), 1200.0,
           "double precision + NEON", "NEON (Advanced SIMD)", ("gcc-aarch64-linux-gnu", "qemu-user"),
           ("aarch64", "cortex-a53"), 0, ("-cpu", "cortex-a53")),
)  # fmt: skip

DEVICE_NAMES = tuple(device.name for device in _DEVICES)


def get_device(name: str) -> Device:
    """The profile called ``name``; InputError listing the known devices otherwise."""
    for device in _DEVICES:
        if device.name == name:
            return device
    raise InputError(f"device {name!r}: expected one of {', '.join(DEVICE_NAMES)}")


def firmware_file(name: str) -> Path:
    """A file of the bare-metal support (start-up code, the small C library, harness templates)."""
    return Path(__file__).with_name("firmware") / name


__all__ = ["DEVICE_NAMES", "Board", "Device", "ToolchainMissing", "firmware_file", "get_device"]
