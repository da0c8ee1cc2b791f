"""The generated C on real targets: the x86-64 host, a Cortex-M4F bare-metal build (arm-none-eabi-gcc,
newlib semihosting) under qemu-system-arm on the mps2-an386 board, and aarch64 Linux under qemu-aarch64.

Each target builds a GRU, an LSTM and an int8 model deployed with ``edgernn deploy --target c``, runs
their self-tests (1000 steps against the stepper's golden vectors) and a trace whose outputs must equal
the host's within float32 tolerance. A missing toolchain skips with one line naming the Debian
packages; under CI (``CI=true``) it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgernn.benchmark import BenchSettings, bench_model
from edgernn.export import export_model
from edgernn.export.c.targets import (
    TARGET_NAMES,
    CStepBench,
    RunResult,
    Target,
    ToolchainError,
    build_executable,
    get_target,
    measure_footprint,
    parse_self_test,
    run_executable,
    run_self_test,
    run_trace,
)
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime.errors import ContractError, InputError

VOCABULARY = tuple("abcdefgh ")
MODELS = ("gru", "lstm", "int8")
CROSS_TARGETS = ("cortex-m4", "aarch64")


def require(target_name: str) -> None:
    """Skip (fail under CI=true) when a tool of the target is missing, naming the Debian packages."""
    target = get_target(target_name)
    missing = target.missing_tools()
    if missing:
        message = (
            f"{target_name}: {', '.join(missing)} not found (Debian packages: {' '.join(target.packages)})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _export(config: ModelConfig, path: Path, vocabulary: list[str] | None = None) -> Path:
    torch.manual_seed(0)
    export_model(RecurrentModel(config).eval(), path, vocabulary=vocabulary, chunk_steps=None)
    return path


MODEL_CONFIGS = {
    "gru": ModelConfig(cell="gru", input_kind="features", input_size=3, hidden_size=16, num_layers=2,
                       output_size=2, output_kind="values"),
    "lstm": ModelConfig(cell="lstm", input_size=len(VOCABULARY), output_size=len(VOCABULARY),
                        hidden_size=12, embedding_size=8),
    "gru64": ModelConfig(cell="gru", input_kind="features", input_size=4, hidden_size=64, num_layers=1,
                         output_size=4, output_kind="values"),
}  # fmt: skip
DEPLOYMENTS = {"gru": ("gru", {}), "lstm": ("lstm", {}), "int8": ("gru64", {"precision": "int8"}),
               "gru64": ("gru64", {})}  # fmt: skip


class Deployed:
    """Each model exported and deployed to C on first use: a 2-layer GRU on features, a token LSTM, a
    GRU 1x64 on features in float32 and in int8."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs: dict[str, Path] = {}

    def onnx(self, model: str) -> Path:
        path = self.root / f"{model}.onnx"
        if not path.exists():
            vocabulary = list(VOCABULARY) if MODEL_CONFIGS[model].input_kind == "tokens" else None
            _export(MODEL_CONFIGS[model], path, vocabulary)
        return path

    def __getitem__(self, name: str) -> Path:
        if name not in self.dirs:
            model, options = DEPLOYMENTS[name]
            self.dirs[name] = deploy(self.onnx(model), "c", self.root / name, **options).out_dir
        return self.dirs[name]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    require("host")
    torch.set_num_threads(1)
    return Deployed(tmp_path_factory.mktemp("c_platforms"))


@pytest.fixture(scope="module")
def host_traces() -> dict[str, np.ndarray]:
    """Model -> its outputs on the host, traced once when a cross target first needs them."""
    return {}


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("model", MODELS)
def test_self_test_passes_on_target(deployed, target, model, tmp_path):
    require(target)
    result = run_self_test(deployed[model], target, build_dir=tmp_path)
    assert result.passed, result.output[-1000:]
    assert result.steps == 1000
    assert result.max_abs_error is not None and 0 <= result.max_abs_error < 1e-3
    assert result.output.rstrip().splitlines()[-1] == "PASS"


@pytest.mark.parametrize("target", CROSS_TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_outputs_equal_the_host(deployed, host_traces, target, model):
    require(target)
    outputs = run_trace(deployed[model], target)
    if model not in host_traces:
        host_traces[model] = run_trace(deployed[model], "host")
    expected = host_traces[model]
    assert outputs.shape == expected.shape == (64, outputs.shape[1])
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_cortex_m4_footprint_of_the_model_alone(deployed):
    require("cortex-m4")
    f32, i8 = measure_footprint(deployed["gru64"]), measure_footprint(deployed["int8"])
    for footprint in (f32, i8):
        assert footprint.data == 0 and footprint.bss == 0  # no mutable statics: reentrant
        assert footprint.step_ram is not None and footprint.ram == footprint.step_ram > 0
        assert footprint.header_flash is not None and footprint.header_flash <= footprint.flash
        assert footprint.linked_flash is not None and footprint.linked_flash >= footprint.header_flash
    weights_f32 = 4 * (3 * 64 * (4 + 64) + 4 * 64)  # GRU 1x64 on 4 features, head 64 -> 4
    assert weights_f32 <= f32.flash < weights_f32 + 32_768
    assert i8.flash < f32.flash / 2.5


def _bare_metal(tmp_path: Path, name: str, body: str) -> Path:
    source = tmp_path / f"{name}.c"
    source.write_text("#include <stdio.h>\nint main(void)\n{\n" + body + "\n}\n")
    return build_executable("cortex-m4", [source], tmp_path / f"{name}.elf")


def test_cortex_m4_verdict_comes_from_the_last_line(tmp_path):
    require("cortex-m4")
    failing = _bare_metal(tmp_path, "failing", 'printf("max_abs_error=0.5 steps=1000\\nFAIL\\n");\nreturn 1;')
    verdict = parse_self_test("cortex-m4", run_executable("cortex-m4", failing, timeout_s=30))
    assert not verdict.passed and verdict.max_abs_error == 0.5 and verdict.steps == 1000
    faulting = _bare_metal(tmp_path, "faulting", "return *(volatile int *)0xF0000000u;")
    verdict = parse_self_test("cortex-m4", run_executable("cortex-m4", faulting, timeout_s=30))
    assert not verdict.passed and "FAULT" in verdict.output


def test_cortex_m4_run_past_its_timeout_is_an_error(tmp_path):
    require("cortex-m4")
    spinning = _bare_metal(tmp_path, "spinning", 'printf("started\\n");\nfor (;;) {\n}')
    with pytest.raises(ContractError, match="did not finish within 2 s"):
        run_executable("cortex-m4", spinning, timeout_s=2)


def test_output_without_a_verdict_is_an_error():
    with pytest.raises(ContractError, match="expected PASS or FAIL as its last line"):
        parse_self_test("host", RunResult(0, "max_abs_error=0 steps=1000\n", "", 0.1))
    assert not parse_self_test("host", RunResult(1, "PASS\n", "", 0.1)).passed  # the status counts here


def test_missing_tool_names_the_packages(tmp_path):
    target = Target("cortex-m4", "test", "no-such-gcc", (), (), ("no-such-qemu",), ("gcc-arm-none-eabi",))
    assert target.missing_tools() == ["no-such-gcc", "no-such-qemu"]
    with pytest.raises(
        ToolchainError,
        match="no-such-gcc, no-such-qemu not found; install the Debian packages gcc-arm-none-eabi",
    ):
        build_executable(target, [tmp_path / "a.c"], tmp_path / "a.elf")
    with pytest.raises(InputError, match="expected one of host, cortex-m4, aarch64"):
        get_target("riscv")


def test_c_step_bench_times_every_step(deployed, tmp_path):
    bench = CStepBench.build(deployed.onnx("gru"), tmp_path, warmup=10)
    doc = bench.run(200, raw=True)
    assert doc["steps"] == 200 and doc["warmup"] == 10 and doc["errors"] == 0
    assert len(doc["timings_ns"]) == 200 and all(t > 0 for t in doc["timings_ns"])
    assert 0 < doc["p50_us"] <= doc["p99_us"] <= doc["max_us"] and doc["steps_per_s"] > 0


def test_bench_has_the_c_path_beside_the_baseline(deployed):
    settings = BenchSettings(
        steps=200, warmup=20, rounds=2, pool_streams=4, silence_steps=50, cold_start=False
    )
    result = bench_model(deployed.onnx("gru"), settings)
    assert {"c", "stepper", "baseline_onnx"} <= set(result.paths)
    assert result.paths["c"].steps == 200 and len(result.timings_us["c"]) == 200
    ratios = result.to_dict()["ratios"]
    assert ratios["c_vs_baseline_onnx"] == pytest.approx(
        result.paths["c"].p50_us / result.paths["baseline_onnx"].p50_us
    )
