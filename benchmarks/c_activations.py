"""The largest error of the generated C's activations against double precision, over float32 itself.

Default (no libm): ``NAME_exp`` (relative error, results in the normal range), ``NAME_sigmoid`` and
``NAME_tanh`` (absolute error); ``--fast-activations``: ``NAME_fast_sigmoid`` and ``NAME_fast_tanh``.
Every ``--stride``-th float32 bit pattern is tried (1: every float, about 10 minutes here; NaNs skipped),
through the host C compiler at -O2 with the strict flags (no contraction: the same results a vectorised
loop gives). Prints the Markdown table of docs/c.md.

Run:  python benchmarks/c_activations.py [--stride 3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from edgernn.export.c import compile_host, generate_sources

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.c"
#define CHECK_ABS(name, fn, ref) { const double e = fabs((double)fn(x) - (ref)); \
    if (e > worst[name]) { worst[name] = e; at[name] = x; } }
int main(int argc, char **argv)
{
    const unsigned long long stride = argc > 1 ? strtoull(argv[1], 0, 10) : 1;
    double worst[5] = {0, 0, 0, 0, 0}; float at[5] = {0, 0, 0, 0, 0};
    const char *names[5] = {"exp", "sigmoid", "tanh", "fast_sigmoid", "fast_tanh"};
    for (unsigned long long b = 0; b < 0x100000000ull; b += stride) {
        const uint32_t u = (uint32_t)b;
        float x;
        memcpy(&x, &u, 4);
        if (x != x) continue;
        const double d = x, ref_exp = exp(d), ref_sig = 1.0 / (1.0 + exp(-d)), ref_tanh = tanh(d);
        if (ref_exp >= 1.1754943508222875e-38 && ref_exp <= 3.4028234663852886e38) {
            const double e = fabs((double)model_exp(x) - ref_exp) / ref_exp;
            if (e > worst[0]) { worst[0] = e; at[0] = x; }
        }
        CHECK_ABS(1, model_sigmoid, ref_sig)
        CHECK_ABS(2, model_tanh, ref_tanh)
        CHECK_ABS(3, model_fast_sigmoid, ref_sig)
        CHECK_ABS(4, model_fast_tanh, ref_tanh)
    }
    for (int i = 0; i < 5; i++) printf("%s %.3g %.9g\n", names[i], worst[i], (double)at[i]);
    printf("specials %g %g %g %g %g %g %g %g %d\n", (double)model_exp(HUGE_VALF), (double)model_exp(-HUGE_VALF),
        (double)model_exp(89.0f), (double)model_exp(-100.0f), (double)model_tanh(-HUGE_VALF),
        (double)model_sigmoid(HUGE_VALF), (double)model_sigmoid(-HUGE_VALF), (double)model_tanh(-0.0f),
        model_exp(NAN) != model_exp(NAN) && model_tanh(NAN) != model_tanh(NAN)
            && model_sigmoid(NAN) != model_sigmoid(NAN));
    return 0;
}
"""


def activation_errors(model: Path, directory: Path, stride: int) -> dict[str, tuple[float, float]]:
    """{function: (largest error, where)} and ``"specials"``: exp(+-inf, 89, -100), tanh(-inf),
    sigmoid(+-inf), tanh(-0), and 1.0 if exp, tanh and sigmoid of NaN are NaN."""
    sources = generate_sources(model, fast_activations=True)
    text = sources.files["model.c"]
    plain = generate_sources(model).files["model.c"]
    start = plain.index("typedef union")
    helpers = plain[start : plain.index("static int model_finite")]
    if "model_exp" not in text:
        text = text.replace("static int model_finite", helpers + "static int model_finite", 1)
    (directory / "model.h").write_text(sources.files["model.h"])
    (directory / "model.c").write_text(text)
    (directory / "act_test.c").write_text(HARNESS)
    (directory / "act.c").write_text("typedef int act_unused;\n")  # the harness includes model.c itself
    flags = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-Wno-unused-function")
    executable = compile_host(directory, "act", flags=flags)
    out = subprocess.run([str(executable), str(stride)], capture_output=True, text=True, check=True).stdout
    result: dict = {}
    for line in out.splitlines():
        name, *values = line.split()
        result[name] = tuple(float(v) for v in values)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=3)
    args = parser.parse_args()
    import torch

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        config = ModelConfig(
            cell="gru",
            input_kind="features",
            input_size=4,
            hidden_size=8,
            output_size=2,
            output_kind="values",
        )
        export_model(RecurrentModel(config).eval(), root / "m.onnx", chunk_steps=None)
        errors = activation_errors(root / "m.onnx", root, args.stride)
    count = (2**32 + args.stride - 1) // args.stride
    print(f"every {args.stride}th float32 ({count:,} values, NaNs skipped), against double precision\n")
    print("| function | max error | at x |")
    print("|---|---:|---:|")
    labels = {
        "exp": "exp (default), relative",
        "sigmoid": "sigmoid (default), absolute",
        "tanh": "tanh (default), absolute",
        "fast_sigmoid": "fast sigmoid, absolute",
        "fast_tanh": "fast tanh, absolute",
    }
    for key, label in labels.items():
        worst, at = errors[key]
        print(f"| {label} | {worst:.3g} | {at:.7g} |")


if __name__ == "__main__":
    main()
