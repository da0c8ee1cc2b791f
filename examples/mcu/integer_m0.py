"""An anomaly scorer in integers only on a Cortex-M0+ (no FPU), emulated: train (or take) a one-channel
anomaly model, deploy it with ``--device cortex-m0plus`` (which picks ``--precision integer``, calibrates and
gates it on the test series, and replays its self-test on the emulated core), write the samples as the
int16 values the model takes, build anomaly_scorer_integer.c with ``-DEDGERNN_NO_FLOAT`` and run it in QEMU.

    python integer_m0.py                          # trains a small model first (about a minute)
    python integer_m0.py --model my-anomaly.onnx  # your own (edgernn train --task anomaly, then export)

It prints, with the model trained here: ``top score 18.6 at row 4198; labelled anomaly rows 4187-4198: inside
the window +-100``. The model's step and the scorer use no floating point; the program still links
libgcc's double helpers because the emulator's small C library (edgernn's device firmware) formats floats
in its printf.

Needs the Debian packages gcc-arm-none-eabi qemu-system-arm, and edgernn (``make setup`` at the top).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
EDGERNN = [sys.executable, "-m", "edgernn"]


def train(build: Path, steps: int) -> Path:
    model = build / "anomaly.onnx"
    if not model.is_file():
        run = build / "anomaly-run"
        subprocess.run([*EDGERNN, "train", str(DATA / "ucr_internalbleeding16_train.csv"), "--task", "anomaly",
                        "--hidden-size", "32", "--steps", str(steps), "-o", str(run), "--overwrite"], check=True)  # fmt: skip
        subprocess.run([*EDGERNN, "export", str(run), "-o", str(model)], check=True)
    return model


def scale(header_or_source: str, pattern: str) -> float:
    found = re.search(pattern, header_or_source)
    if found is None:
        raise SystemExit(f"the deployed model has no {pattern!r}: is it --precision integer?")
    return float(found.group(1).rstrip("f"))


def write_samples(deployed: Path, out: Path, first: int = 3700, count: int = 1000) -> None:
    """samples_integer.h: test rows first..first+count-1 as int16 at the model's input scale, rounded as
    model_quantize_input rounds, and the ratio of the output's scale to the input's in Q16."""
    in_scale = scale((deployed / "model.c").read_text(), r"model_input_scale\[\w+\] = \{([^,}]+)\}")
    out_scale = scale((deployed / "model.h").read_text(), r"#define MODEL_OUTPUT_SCALE\s+(\S+)")
    with (DATA / "ucr_internalbleeding16_test.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[first : first + count]
    labelled = [first + i for i, row in enumerate(rows) if row["is_anomaly"] == "1"]
    values = []
    for row in rows:
        v = max(-32768.0, min(32767.0, float(row["value"]) / in_scale))
        values.append(int(v + (0.5 if v >= 0 else -0.5)))
    lines = [
        f"/* InternalBleeding16 test rows {first}-{first + count - 1} as int16 at the model's input scale",
        f" * {in_scale!r}; written by integer_m0.py. */",
        "#ifndef SAMPLES_INTEGER_H\n#define SAMPLES_INTEGER_H\n",
        f"#define SAMPLES_COUNT {count}",
        f"#define SAMPLES_FIRST_ROW {first}",
        f"#define SAMPLES_ANOMALY_FIRST_ROW {labelled[0]}",
        f"#define SAMPLES_ANOMALY_LAST_ROW {labelled[-1]}",
        f"#define SAMPLES_OUTPUT_TO_INPUT_Q16 {round(out_scale / in_scale * 65536)} /* output unit in input units */\n",
        "static const int16_t samples[SAMPLES_COUNT] = {",
        *("\t" + ", ".join(str(v) for v in values[i : i + 12]) + "," for i in range(0, count, 12)),
        "};\n\n#endif",
    ]
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A one-channel anomaly model (default: train one).")
    parser.add_argument("--build", type=Path, default=HERE / "build", help="Where to work.")
    parser.add_argument("--steps", type=int, default=300, help="Training steps when no --model is given.")
    args = parser.parse_args(argv)
    args.build.mkdir(parents=True, exist_ok=True)
    model = args.model or train(args.build, args.steps)
    deployed = args.build / "anomaly-m0"
    subprocess.run([*EDGERNN, "deploy", str(model), "--target", "c", "--device", "cortex-m0plus", "--data",
                    str(DATA / "ucr_internalbleeding16_test.csv"), "-o", str(deployed)], check=True)  # fmt: skip
    write_samples(deployed, args.build / "samples_integer.h")

    from edgernn.export.c.devices import get_device
    from edgernn.export.c.devices.build import build, run

    device = get_device("cortex-m0plus")
    program = build(
        device, [HERE / "anomaly_scorer_integer.c", deployed / "model.c"], args.build / "anomaly_m0.elf",
        include=(deployed, args.build), defines=("EDGERNN_NO_FLOAT",),
    )  # fmt: skip
    done = run(program, timeout_s=300)
    print(done.stdout, end="")
    return 0 if "top score" in done.stdout else 1


if __name__ == "__main__":
    raise SystemExit(main())
