"""The ``triton`` deploy target: a Triton Inference Server model repository with sequence batching.

    edgernn deploy model.onnx --target triton -o model_repository                     # onnxruntime backend
    edgernn deploy model.onnx --target triton --backend python -o model_repository    # python backend
    edgernn deploy model.onnx --target triton --backend c -o model_repository         # generated C

writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (and ``model.py`` for the python
backend; ``REPO/NAME/initial_state/`` for a state that does not start at zero). Triton ignores the
``deploy.json`` the deploy frame leaves at the repository root: it loads only directories.

- ``onnxruntime`` (the default): the step graph with implicit state. Triton's sequence batcher keeps each
  sequence's state on the server, feeds it back at every step and starts it from the initial state.
- ``python``: ``model.py`` keeps an edgernn ``StreamPool`` keyed by correlation ID (the python backend
  implements no implicit state); for CPU-only servers without the onnxruntime backend, such as the
  tritonserver ``pip install 'edgernn[serve]'`` brings (see ``edgernn.export.triton.server``).
- ``c``: the model's generated C (the C target, self-tested) inside a Triton backend of its own,
  ``libtriton_edgernn.so``, built in the version folder (``c_backend.c``): the streams' states live in
  the backend, keyed by correlation ID, and each step is a C call; no Python or onnxruntime in the
  server. Needs a C compiler where the repository is written and a Linux x86-64 or aarch64 server.

Details and measurements: docs/triton.md.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from edgernn.export.deploy import DeployReport
from edgernn.export.triton import config as triton_config
from edgernn.export.triton.config import Settings
from edgernn.runtime import Stepper, contract, tolerance
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError
from edgernn.runtime.stepper import open_session, read_info

BACKENDS = ("onnxruntime", "python", "c")
DEFAULTS = {
    "max_batch_size": 64,
    "max_candidate_sequences": 1024,
    "idle_timeout_us": 60_000_000,
    "instances": 1,
    "max_queue_delay_us": 0,
}
MODEL_FILE = "model.onnx"
VERSION = "1"
CHECK_STEPS = 50
CHECK_SEQUENCES = 3
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def write(
    model: Path,
    stage: Path,
    *,
    backend: str | None = None,
    model_name: str | None = None,
    max_batch_size: int | None = None,
    max_candidate_sequences: int | None = None,
    idle_timeout_us: int | None = None,
    instances: int | None = None,
    max_queue_delay_us: int | None = None,
    precision: str | None = None,
    data: str | os.PathLike | None = None,
    tolerance: float | None = None,
    force: bool | None = None,
) -> DeployReport:
    """Write a Triton model repository for ``model`` into ``stage`` and check it.

    Defaults: backend onnxruntime, model name the file's stem, max_batch_size 64, 1024 candidate
    sequences (oldest strategy) and no queue delay (``max_queue_delay_us``: how long the oldest strategy
    may hold a request to batch it with others), sequences idle for 60 s freed, 1 CPU instance. ``precision`` (the c
    flavour only): the generated C's, ``float32`` (default), ``int8`` or ``integer`` (the C target's, with
    their quality gates: ``data``, ``tolerance`` and ``force`` as ``deploy --target c`` takes them; integer
    is calibrated on ``data``). The integer C's requests and responses stay float: the backend quantizes x
    at the header's input scales and converts y back with the C's helpers; each stream's state is the C's
    int16 state. Raises InputError for a bad option, a model without edgernn metadata, or (onnxruntime)
    state pairs Triton would mismatch.
    """
    settings = _settings(
        model, backend, model_name, max_batch_size, max_candidate_sequences, idle_timeout_us, instances,
        max_queue_delay_us,
    )  # fmt: skip
    if precision is not None and settings.backend != "c":
        raise InputError(
            f"--precision: only --backend c takes it (the generated C's precision); --backend "
            f"{settings.backend} serves the ONNX file as it is"
        )
    if (data is not None or tolerance is not None) and precision not in ("int8", "integer"):
        flag = "--data" if data is not None else "--tolerance"
        raise InputError(
            f"{flag}: only --backend c --precision int8 or integer takes it (their quality gates), "
            f"got --backend {settings.backend} --precision {precision or 'float32'}"
        )
    info = _model_info(model)
    if settings.backend == "onnxruntime":
        triton_config.check_state_pairing(info)
    folder = stage / settings.name
    (folder / VERSION).mkdir(parents=True)
    config = triton_config.build(info, settings)
    text = triton_config.to_text(config)
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    report = DeployReport(
        target="triton", out_dir=stage, details={"backend": settings.backend, "model_name": settings.name}
    )
    if settings.backend == "c":
        gates = {"data": data, "tolerance": tolerance, "force": force}
        report.checks += _write_c_backend(model, folder / VERSION, settings, report, precision, gates)
        report.checks.append(_parse_check(text))
        report.notes += _notes(settings)
        return report
    shutil.copyfile(model, folder / VERSION / MODEL_FILE)
    if settings.backend == "python":
        shutil.copyfile(Path(__file__).with_name("python_model.py"), folder / VERSION / "model.py")
    else:
        _write_initial_states(folder, info)
    report.checks += _verify(folder, text, info, settings)
    report.notes += _notes(settings)
    return report


def _settings(model, backend, name, max_batch_size, candidates, idle_us, instances, delay_us) -> Settings:
    backend = backend or "onnxruntime"
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    name = name or model.stem
    if not _NAME.fullmatch(name):
        raise InputError(
            f"--model-name {name!r}: expected letters, digits, '_', '.' or '-' (not starting with '.' or '-')"
        )
    values = {
        "max_batch_size": max_batch_size,
        "max_candidate_sequences": candidates,
        "idle_timeout_us": idle_us,
        "instances": instances,
        "max_queue_delay_us": delay_us,
    }
    for key, value in values.items():
        least = 0 if key == "max_queue_delay_us" else 1  # no delay is Triton's default; the rest count things
        if value is None:
            values[key] = DEFAULTS[key]
        elif not isinstance(value, int) or isinstance(value, bool) or value < least:
            wanted = "a positive integer" if least else "an integer >= 0"
            raise InputError(f"--{key.replace('_', '-')}: expected {wanted}, got {value!r}")
    return Settings(backend=backend, name=name, model_file=MODEL_FILE, **values)


def _model_info(model: Path) -> ModelInfo:
    info = read_info(open_session(model))
    if info is None:
        raise InputError(
            f"model {str(model)!r}: expected an edgernn model (with edgernn metadata); Triton needs its "
            "state pairs, shapes and initial fill, which only the metadata gives"
        )
    Stepper(model, chunk_model=False)  # the graph matches its metadata
    return info


def _write_initial_states(folder: Path, info: ModelInfo) -> None:
    for state in info.states:
        if state.initial != 0.0:
            path = folder / "initial_state" / triton_config.initial_file(state)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(np.full(state.shape, state.initial, np.float32).tobytes())


def _verify(folder: Path, text: str, info: ModelInfo, settings: Settings) -> list[str]:
    checks = [_parse_check(text)]
    if settings.backend == "onnxruntime":
        checks.append(_implicit_state_check(folder, info))
    else:
        compile((folder / VERSION / "model.py").read_text(encoding="utf-8"), "model.py", "exec")
        checks.append(_pool_check(folder, info))
    return checks


def _write_c_backend(
    model: Path, version: Path, settings: Settings, report: DeployReport, precision: str | None, gates: dict
) -> list[str]:
    """The C target's verified model.h / model.c and the backend source in ``version``, built there as
    libtriton_edgernn.so. Returns the checks that ran."""
    from edgernn.export.c import writer as c_writer
    from edgernn.export.triton.c_flavour import build_backend

    c_report = c_writer.write(model, version, precision=precision, **gates)
    (version / "model_test.c").unlink()  # the self-test ran; the server needs none of it
    shutil.copyfile(Path(__file__).with_name("c_backend.c"), version / "c_backend.c")
    slots = 2 * settings.max_candidate_sequences
    _, built = build_backend(version, slots=slots, idle_us=settings.idle_timeout_us)
    report.details.update(
        c_target={k: c_report.details[k] for k in ("precision", "ram_bytes", "state_bytes", "verified")},
        streams_per_instance=slots,
    )
    report.notes += [n for n in c_report.notes if "WARNING" in n]
    return [
        *c_report.checks,
        f"{built}: {slots} stream states per instance, {slots * c_report.details['state_bytes']:,} bytes",
    ]


def _parse_check(text: str) -> str:
    try:
        parsed = triton_config.parse(text)
    except ImportError:
        return "config.pbtxt not parsed: tritonclient is not installed (pip install 'edgernn[serve]')"
    return f"config.pbtxt parsed by Triton's ModelConfig protobuf ({len(parsed.ListFields())} fields set)"


def _reference(path: Path, xs: np.ndarray) -> np.ndarray:
    """ys ``(S, T, O)`` of S independent Stepper streams fed ``xs`` ``(S, T, ...)``."""
    stepper = Stepper(path, chunk_model=False)
    streams = [stepper.new_stream() for _ in range(len(xs))]
    return np.stack([np.stack([s.step(x) for x in seq]) for s, seq in zip(streams, xs, strict=True)])


def _inputs(info: ModelInfo, rng: np.random.Generator) -> np.ndarray:
    shape = (CHECK_SEQUENCES, CHECK_STEPS)
    if info.input.kind == "tokens":
        return rng.integers(0, info.input.size, shape, dtype=np.int64)
    return rng.standard_normal((*shape, info.input.size)).astype(np.float32)


def _implicit_state_check(folder: Path, info: ModelInfo) -> str:
    """Step the staged graph the way Triton's implicit state does: each state input fed the state output
    it is paired with by sorted name, starting from the config's initial state (zero or the data file)."""
    path = folder / VERSION / MODEL_FILE
    xs = _inputs(info, np.random.default_rng(0))
    session = Stepper(path, chunk_model=False).session
    inputs = sorted(s.input for s in info.states)
    outputs = sorted(s.output for s in info.states)
    state = {s.input: _initial(folder, s, CHECK_SEQUENCES) for s in info.states}
    ys = []
    for t in range(CHECK_STEPS):
        results = session.run(None, {contract.INPUT_NAME: xs[:, t], **state})
        named = dict(zip([o.name for o in session.get_outputs()], results, strict=True))
        state = {i: named[o] for i, o in zip(inputs, outputs, strict=True)}
        ys.append(named[contract.OUTPUT_NAME])
    error = _scaled_error(np.stack(ys, axis=1), _reference(path, xs), info)
    if error > 1e-5:
        raise InputError(
            f"the implicit-state replay differs from the stepper by {error:.3g} (expected <= 1e-5 on the model's scale)"
        )
    return (
        f"{CHECK_SEQUENCES} sequences x {CHECK_STEPS} steps with state fed back as Triton pairs it "
        f"(sorted names, initial state from the config): largest difference from the stepper {error:.2g}"
    )


def _scaled_error(got: np.ndarray, want: np.ndarray, info: ModelInfo) -> float:
    """Largest |got - want| of y on the model's scale (each output's training std as the unit)."""
    return tolerance.largest(tolerance.scaled_error(got, want, tolerance.output_scale(info)))


def _initial(folder: Path, state, batch: int) -> np.ndarray:
    if state.initial == 0.0:
        one = np.zeros(state.shape, np.float32)
    else:
        raw = (folder / "initial_state" / triton_config.initial_file(state)).read_bytes()
        one = np.frombuffer(raw, np.float32).reshape(state.shape)
    return np.ascontiguousarray(np.broadcast_to(one, (batch, *state.shape)))


def _pool_check(folder: Path, info: ModelInfo) -> str:
    """Step the staged model through a StreamPool as model.py does, against separate Stepper streams."""
    path = folder / VERSION / MODEL_FILE
    xs = _inputs(info, np.random.default_rng(0))
    pool = Stepper(path, chunk_model=False).new_pool(CHECK_SEQUENCES)
    ids = [pool.join() for _ in range(CHECK_SEQUENCES)]
    ys = [pool.step({i: xs[k, t] for k, i in enumerate(ids)}) for t in range(CHECK_STEPS)]
    got = np.stack([np.stack([y[i] for y in ys]) for i in ids])
    error = _scaled_error(got, _reference(path, xs), info)
    if error > 1e-5:
        raise InputError(
            f"the pool differs from the stepper by {error:.3g} (expected <= 1e-5 on the model's scale)"
        )
    return (
        f"{CHECK_SEQUENCES} sequences x {CHECK_STEPS} steps through the StreamPool model.py keeps: "
        f"largest difference from the stepper {error:.2g}"
    )


def _notes(settings: Settings) -> list[str]:
    if settings.backend == "c":
        serve = (
            "python -m edgernn.export.triton.server REPO  (pip install 'edgernn[serve]'), or any "
            "tritonserver >= 2.51 on this CPU architecture: the backend is in the version folder"
        )
    elif settings.backend == "python":
        serve = "python -m edgernn.export.triton.server REPO  (pip install 'edgernn[serve]')"
    else:
        serve = "tritonserver --model-repository REPO  (a server with the onnxruntime backend, e.g. NGC's)"
    return [
        f"serve: {serve}",
        "clients: gRPC sequence requests (sequence_id, sequence_start, sequence_end); docs/triton.md",
    ]
