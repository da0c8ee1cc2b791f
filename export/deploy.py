"""``edgernn deploy``: one verified ONNX file to the artefacts of a deployment target.

Every target is a writer ``write(model, stage, **options) -> DeployReport`` in its own module:

=========  ===============================  ==============================================
target     module                           writes
=========  ===============================  ==============================================
``ort``    ``edgernn.export.ort_format``    ORT format files and a reduced-build config
``c``      ``edgernn.export.c``             C99 source for microcontrollers and C apps
``triton`` ``edgernn.export.triton``        a Triton model repository
=========  ===============================  ==============================================

Before any writer runs, :func:`deploy` checks the arguments (lengths the file system and the compiler
take, names that would collide with what edgernn writes), the destination (``edgernn.export.deploy_dir``:
new, empty, or an earlier deployment of the same target, unless ``force``) and the graph
(``edgernn.runtime.graph_bounds``: every input defined, no cycle, every output made, no dead node, nothing
allocated past the contract's bounds), each refusal one InputError or ContractError. The writer fills
``stage``, an empty directory beside the destination, and verifies what it wrote; :func:`deploy` then
publishes it into ``out_dir``, replacing only the files an earlier deployment's ``deploy.json`` lists. A
writer that raises leaves nothing behind, and an earlier deployment in ``out_dir`` stays as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgernn.export.deploy_arguments import check_arguments
from edgernn.export.deploy_dir import MANIFEST, check_destination, publish
from edgernn.runtime.errors import InputError
from edgernn.runtime.graph_bounds import check_model_graph
from edgernn.runtime.session import MAX_MODEL_BYTES
from edgernn.runtime.untrusted import read_bytes

TARGETS = {
    "ort": "edgernn.export.ort_format",
    "c": "edgernn.export.c",
    "triton": "edgernn.export.triton",
}
# What targets need beyond the base install (numpy, onnxruntime, click): onnx, to read and rewrite graphs
# (ort, c, triton --backend c). The ``deploy`` extra brings it without torch: pip install 'edgernn[deploy]'.
DEPLOY_EXTRA = {"onnx"}
_FLAGS = {"skip_verify": "--no-verify"}  # options whose command-line flag is not their name


@dataclass
class DeployReport:
    """What a target wrote and how it was checked.

    ``checks``: one line per verification run, with its numbers ("1000 steps against the stepper: largest
    error 2.1e-07"). ``notes``: what the user does next (a build command, flash and RAM). ``details``:
    the same numbers, machine-readable, for ``--json``. ``files`` (path relative to ``out_dir``, bytes) is
    filled by :func:`deploy` from what the stage holds.
    """

    target: str
    out_dir: Path
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "out_dir": str(self.out_dir),
            "files": [{"path": p, "bytes": n} for p, n in self.files],
            "checks": list(self.checks),
            "notes": list(self.notes),
            "details": self.details,
        }

    def format(self) -> str:
        lines = [f"{self.out_dir}: {self.target} target"]
        lines += [f"  wrote {p} ({n:,} bytes)" for p, n in self.files]
        lines += [f"  check: {c}" for c in self.checks]
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def deploy(
    model: str | os.PathLike,
    target: str,
    out_dir: str | os.PathLike,
    *,
    force: bool | None = None,
    **options: Any,
) -> DeployReport:
    """Write and verify the artefacts of ``target`` for ``model`` into ``out_dir``.

    ``options`` are the target writer's keyword arguments; one the target does not take is refused by
    name. ``out_dir`` may be new, empty, or an earlier deployment of ``target`` (it holds ``deploy.json``),
    whose listed files are replaced once everything is written and verified; the user's other files there
    stay. ``force``: replace a directory that holds anything else, and overwrite a file in the way (also
    passed to a writer that takes it: the C target's int8 quality gates).
    """
    model = Path(model)
    out_dir = Path(out_dir)
    with _deploy_extra(target):
        writer = _writer(target)
    if force and "force" in inspect.signature(writer).parameters:
        options["force"] = force
    _check_options(writer, target, options)
    check_arguments(target, out_dir, options, _flag)
    if not model.is_file():
        raise InputError(f"model {str(model)!r}: expected an ONNX file, found none")
    check_model_graph(read_bytes(model, "the model", max_bytes=MAX_MODEL_BYTES), repr(str(model)))
    place = Path(os.path.abspath(out_dir))  # "-o ." has a parent to stage in, as any other directory
    destination = check_destination(place, target, bool(force))
    place.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".edgernn-", suffix=".stage", dir=place.parent))
    try:
        with _deploy_extra(target):
            report = writer(model, stage, **options)
        report.out_dir = out_dir
        report.files = _listing(stage)
        _write_manifest(stage, model, report)
        report.files = _listing(stage)
        publish(stage, destination, bool(force))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _writer(target: str) -> Callable[..., DeployReport]:
    if target not in TARGETS:
        raise InputError(f"target {target!r}: expected one of {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[target]).write


@contextlib.contextmanager
def _deploy_extra(target: str) -> Iterator[None]:
    """A module of the deploy extra missing becomes one line naming the extra to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in DEPLOY_EXTRA:
            raise
        raise InputError(
            f"deploy --target {target} needs the deploy extra ({missing} is not installed): "
            "pip install 'edgernn[deploy]'"
        ) from None


def _check_options(writer: Callable[..., DeployReport], target: str, options: dict[str, Any]) -> None:
    accepted = set(inspect.signature(writer).parameters) - {"model", "stage"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        flags = ", ".join(_given(name, accepted) for name in unknown)
        raise InputError(f"{flags}: not an option of --target {target} (it takes {_flags(accepted)})")


def _given(name: str, accepted: set[str]) -> str:
    """An unknown option as given: its flag, or, where that flag is an accepted option's (a Python keyword
    spelled as the flag: ``no_verify`` for ``--no-verify``), the keyword and the one to use."""
    meant = [a for a in sorted(accepted) if _flag(a) == _flag(name)]
    return f"{name}= ({_flag(name)} is {meant[0]}=True in Python)" if meant else _flag(name)


def _flags(names: set[str]) -> str:
    return ", ".join(_flag(n) for n in sorted(names)) or "no options"


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _listing(stage: Path) -> list[tuple[str, int]]:
    return sorted(
        (p.relative_to(stage).as_posix(), p.stat().st_size) for p in stage.rglob("*") if p.is_file()
    )


def _write_manifest(stage: Path, model: Path, report: DeployReport) -> None:
    doc = {
        "target": report.target,
        "model": model.name,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "files": [{"path": p, "bytes": n} for p, n in report.files],
        "checks": report.checks,
        "details": report.details,
    }
    (stage / MANIFEST).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
