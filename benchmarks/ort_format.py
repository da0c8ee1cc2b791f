"""Print docs/ort.md's tables: the ``ort`` deploy target on reference models, and which onnxruntime releases
load its files.

1. For each reference model (untrained weights: equality, size and speed do not depend on training),
   float32 and quantized: ``edgernn deploy --target ort``, then the .ort against the .onnx over 1000 steps
   with state fed back (largest error), the file sizes, and the step p50 of both through the Stepper,
   measured side by side in one run (ratios only).
2. With ``--releases 1.15.1,1.16.0``: a virtual environment per onnxruntime release (pip, from the
   configured index), each loading every .ort file and stepping it 100 steps against this onnxruntime's
   outputs (largest error), int8 weight files also with ``session.disable_quant_qdq=1`` (shown after a
   slash), as the Stepper opens them. This is what ``edgernn.export.ort_format.OLDEST_RELEASE`` records.

Run: python benchmarks/ort_format.py [--releases 1.15.1,1.16.0] [--work runs/ort-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from edgernn.data import build_vocabulary, encode, split_train_validation
from edgernn.export import EvaluationData, QuantizeConfig, export_model
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import Stepper, bench_side_by_side
from edgernn.runtime.chunk import probe_input

TEXT = (Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
VOCAB = build_vocabulary(TEXT)
VARIANTS = [("float32", None), ("int8 weights", ("int8", "weights")), ("int8 dynamic", ("int8", "dynamic")),
            ("fp16", ("fp16", "auto"))]  # fmt: skip
MODELS = {
    "char GRU 2x128": dict(cell="gru", hidden_size=128, num_layers=2, embedding_size=32),
    "char LSTM 1x256": dict(cell="lstm", hidden_size=256, num_layers=1, embedding_size=32),
}
LOAD_CHECK = """
import json, sys
import numpy as np, onnxruntime as ort


def steps(case, folding):
    options = ort.SessionOptions()
    if folding:  # what the Stepper sets for int8 weight files
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(case["ort"], options, providers=["CPUExecutionProvider"])
    state = {k: np.zeros(v, np.float32) for k, v in case["states"].items()}
    ys = []
    for x in case["xs"]:
        outputs = session.run(None, {"x": np.array([x], np.int64), **state})
        state = dict(zip(case["states"], outputs[1:]))
        ys.append(outputs[0][0])
    return float(np.abs(np.array(ys) - np.array(case["want"])).max())


result = {}
for case in json.loads(open(sys.argv[1]).read()):
    for folding in [False, True] if case["folds"] else [False]:
        try:
            outcome = steps(case, folding)
        except Exception as exc:
            outcome = str(exc).splitlines()[0].split(" : ")[-1][:100]
        result.setdefault(case["ort"], []).append(outcome)
print(json.dumps({"version": ort.__version__, "result": result}))
"""


def export_variants(work: Path) -> dict[str, Path]:
    train, validation = split_train_validation(encode(TEXT[:100_000], VOCAB))
    data = EvaluationData(
        train, "loss", "tinyshakespeare[:100000]", inputs=validation[:-1], targets=validation[1:]
    )
    files = {}
    for name, shape in MODELS.items():
        torch.manual_seed(0)
        model = RecurrentModel(ModelConfig(input_size=len(VOCAB), output_size=len(VOCAB), **shape)).eval()
        for variant, quantize in VARIANTS:
            path = work / f"{name.split()[1].lower()}-{variant.replace(' ', '-')}.onnx"
            config = None if quantize is None else QuantizeConfig(*quantize, force=True)
            export_model(model, path, vocabulary=VOCAB, extra_metadata={"task": "charlm"}, quantize=config,
                         data=None if config is None else data)  # fmt: skip
            files[f"{name}, {variant}"] = path
    return files


def measure(files: dict[str, Path], work: Path) -> tuple[list[str], list[dict]]:
    rows = ["| model | .onnx bytes | .ort bytes | largest error, 1000 steps | .ort step p50 / .onnx p50 |",
            "|---|---|---|---|---|"]  # fmt: skip
    cases = []
    for label, path in files.items():
        report = deploy(path, "ort", work / f"{path.stem}-ort")
        ort_path = work / f"{path.stem}-ort" / f"{path.stem}.ort"
        error = report.details["largest_error"][ort_path.name]
        onnx_stats, ort_stats = bench_side_by_side([Stepper(path), Stepper(ort_path)], steps=3000, warmup=300)
        ratio = ort_stats.p50_us / onnx_stats.p50_us
        rows.append(
            f"| {label} | {path.stat().st_size:,} | {ort_path.stat().st_size:,} | {error:.2g} | {ratio:.2f} |"
        )
        stepper = Stepper(path, chunk_model=False)
        xs = probe_input(stepper.info, 100)[0]
        want = [stepper.step(x).tolist() for x in xs]
        states = {s.input: [1, *s.shape] for s in stepper.info.states}
        folds = (stepper.info.quantization or {}).get("method") == "weights"
        cases.append(
            {"ort": str(ort_path), "xs": xs.tolist(), "want": want, "states": states, "folds": folds}
        )
    return rows, cases


def check_releases(releases: list[str], cases: list[dict], work: Path) -> list[str]:
    spec = work / "cases.json"
    spec.write_text(json.dumps(cases))
    rows = ["| onnxruntime | " + " | ".join(Path(c["ort"]).stem for c in cases) + " |",
            "|---|" + "---|" * len(cases)]  # fmt: skip
    for release in releases:
        venv = work / f"venv-{release}"
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "pip"), "install", "-q", f"onnxruntime=={release}", "numpy<2"]
            subprocess.run(pip, check=True)
        done = subprocess.run([str(venv / "bin" / "python"), "-c", LOAD_CHECK, str(spec)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
        cells = [" / ".join(map(_outcome, result[c["ort"]])) for c in cases]
        rows.append(f"| {release} | " + " | ".join(cells) + " |")
    return rows


def _outcome(value: float | str) -> str:
    return f"{value:.2g}" if isinstance(value, float) else f"refused: {value}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--releases", default="", help="comma-separated onnxruntime releases to load the files with"
    )
    parser.add_argument("--work", type=Path, help="keep models and virtual environments here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="ort-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows, cases = measure(export_variants(work), work)
        print("\n".join(rows))
        releases = [r for r in args.releases.split(",") if r]
        if releases:
            print()
            print("\n".join(check_releases(releases, cases, work)))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
