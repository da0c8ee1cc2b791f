"""Every example in every command's --help, and every concrete command of the README's and docs'
walkthroughs, runs as written, on tiny models and data built here; every edgernn command the README and
docs show names real options.

The examples name files a user has (``shakespeare.onnx``, ``runs/shakespeare``, ``readings.csv``,
``silero_vad.onnx``): the ``workspace`` fixture makes each of them, small (a few training steps, hidden
size 8; ``silero_vad.onnx`` is a graph with Silero VAD's inputs, outputs and shapes). Each example runs
through click's CliRunner in a folder of its own holding copies of what it reads. To stay fast, training
budgets become ``--steps 2`` (or 1 more on --resume) with ``--hidden-size 8 --batch-size 4``, and bench
times ``--steps 20 --warmup 2``; everything else is as written. Two kinds of example are parsed, not run:
torchrun's (tests/test_tasks.py runs two processes) and any with ``--device`` (bench, plan, search: minutes
of cross-compiling, emulation or searching, which those commands' own tests cover). A piped example gets its shell command's output
on stdin, or for a program of the reader's own (``sensor-reader``, ``arecord``) what it would write
(``PRODUCERS``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgernn.cli import cli
from edgernn.runtime import contract

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
OUTPUT_OPTIONS = ("-o", "--out", "--plot", "--copy")
SILERO_CONTEXT, SILERO_CHUNK, SILERO_HIDDEN = 64, 512, 128  # 16 kHz: 64 samples of context + 512 new


def help_examples() -> list[tuple[str, str]]:
    """(command, example line) for every example line of every command's --help, piped ones too."""
    found = []
    for name, command in sorted(cli.commands.items()):
        lines = iter((command.help or "").splitlines())
        for line in lines:
            text = re.sub(r"^Examples?:\s*", "", line.strip())  # also "Example: edgernn ..." on one line
            while text.endswith("\\"):  # continued on the next line
                text = text[:-1] + next(lines, "").strip()
            if text.startswith(("edgernn ", "torchrun ")) or f"| edgernn {name}" in text:
                found.append((name, text))
    return found


# what the examples pipe in, where the example names a program of the reader's own
PRODUCERS = {"sensor-reader": "cat readings.csv", "arecord": "cat recording.raw"}


EXAMPLES = help_examples()


def build_silero_shaped_model() -> onnx.ModelProto:
    """A graph shaped as Silero VAD v5's ONNX file: ``input`` (batch, ?) float32 audio, ``state``
    (2, batch, 128), ``sr`` int64 scalar; ``output`` (batch, 1) speech probability, ``stateN``. Like
    Silero, it takes 576 samples per call (64 of context, then 512 new); other lengths fail in the graph.
    """
    rng = np.random.default_rng(7)
    size = SILERO_CONTEXT + SILERO_CHUNK
    weights = {
        "W": (rng.standard_normal((size, SILERO_HIDDEN)) * 0.05).astype(np.float32),
        "U": (rng.standard_normal((SILERO_HIDDEN, SILERO_HIDDEN)) * 0.1).astype(np.float32),
        "v": (rng.standard_normal((SILERO_HIDDEN, 1)) * 0.1).astype(np.float32),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array(0, np.int64), "i0"),
        numpy_helper.from_array(np.array(1, np.int64), "i1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(1.0 / 16000, np.float32), "sr_scale"),
    ]
    nodes = [
        helper.make_node("Gather", ["state", "i0"], ["h"], axis=0),  # (B, 128)
        helper.make_node("Gather", ["state", "i1"], ["c"], axis=0),
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sr_f", "sr_scale"], ["sr_term"]),
        helper.make_node("MatMul", ["input", "W"], ["xw"]),  # (B, 576) @ (576, 128): 576 samples only
        helper.make_node("MatMul", ["h", "U"], ["hu"]),
        helper.make_node("Add", ["xw", "hu"], ["a"]),
        helper.make_node("Add", ["a", "sr_term"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_next"]),
        helper.make_node("Add", ["c", "h_next"], ["c_next"]),
        helper.make_node("MatMul", ["h_next", "v"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
        helper.make_node("Unsqueeze", ["h_next", "axis0"], ["h_u"]),
        helper.make_node("Unsqueeze", ["c_next", "axis0"], ["c_u"]),
        helper.make_node("Concat", ["h_u", "c_u"], ["stateN"], axis=0),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", None]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", SILERO_HIDDEN]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [None, None, None]),
    ]
    graph = helper.make_graph(nodes, "silero_shaped", inputs, outputs, initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    proto.ir_version = contract.IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _readings(path: Path) -> None:
    t = np.arange(400)
    rows = [f"{i},{20 + 3 * np.sin(i / 9):.4f},{1013 + 5 * np.cos(i / 13):.3f}" for i in t]
    path.write_text("timestamp,temperature,pressure\n" + "\n".join(rows) + "\n")


def _recording(path: Path, bundle: Path) -> None:
    """A WAV file of two spoken digits with half a second of silence before, between and after."""
    import wave

    from edgernn.runtime.audio import read_bundle

    clips = read_bundle(bundle)
    silence = np.zeros(clips.rate // 2, np.int16)
    samples = np.concatenate([silence, clips.audio[0], silence, clips.audio[-1], silence])
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(clips.rate)
        f.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The files the examples name, small: data, run directories, exported models, Silero's shape."""
    from edgernn.export import QuantizeConfig, export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    base = tmp_path_factory.mktemp("examples")
    data = base / "examples" / "data"
    data.mkdir(parents=True)
    text = (DATA / "tinyshakespeare.txt").read_text()[:4000]
    (data / "tinyshakespeare.txt").write_text(text)
    (base / "data.txt").write_text(text)
    for name in ("japanese_vowels_train.ts", "japanese_vowels_test.ts", "ucr_internalbleeding16_train.csv",
                 "ucr_internalbleeding16_test.csv"):  # fmt: skip
        shutil.copy(DATA / name, data / name)
    _readings(base / "readings.csv")
    shutil.copy(base / "readings.csv", base / "data.csv")
    shutil.copytree(DATA / "fsdd", data / "fsdd")  # spoken digits: the keyword examples
    _recording(base / "recording.wav", data / "fsdd" / "lucas.npz")
    config = TrainConfig(budget_minutes=None, max_steps=2, batch_size=4, seq_len=16, eval_every=2,
                         eval_batch_size=4, warmup_steps=0)  # fmt: skip
    runs = {
        "shakespeare": ("charlm", data / "tinyshakespeare.txt", {}),
        "vowels": ("classify", data / "japanese_vowels_train.ts", {}),
        "bleeding": ("anomaly", data / "ucr_internalbleeding16_train.csv", {}),
        "sensor": ("forecast", base / "readings.csv", {"columns": ["temperature", "pressure"],
                                                       "targets": ["temperature"]}),
        "digits": ("keyword", data / "fsdd", {"augment": False}),
    }  # fmt: skip
    for name, (task, path, options) in runs.items():
        model = ModelConfig(hidden_size=8, **({"embedding_size": 4} if task == "charlm" else {}))
        train_task(task, path, base / "runs" / name, model, config, data_options=options, progress=False)
        export_run(base / "runs" / name, base / f"{name}.onnx")
    int8 = QuantizeConfig("int8", "weights", force=True)  # an untrained model may lose more than +0.02
    export_run(base / "runs" / "shakespeare", base / "shakespeare-int8.onnx", quantize=int8)
    export_run(base / "runs" / "sensor", base / "forecast.onnx")
    with wave.open(str(base / "recording.wav"), "rb") as recording:  # what arecord -t raw would write
        (base / "recording.raw").write_bytes(recording.readframes(recording.getnframes()))
    (base / "silero_vad.onnx").write_bytes(build_silero_shaped_model().SerializeToString())
    return base


def _fast(command: str, args: list[str]) -> list[str]:
    """The example with the budgets a test can afford (see the module docstring)."""
    args = list(args)
    if command == "train":
        resume = "--resume" in args
        args = _drop_option(_drop_option(args, "--minutes"), "--steps")
        args += ["--steps", "1" if resume else "2"]
        if not resume:  # a run started --init-from another keeps that run's size (8, the workspace's)
            args += ([] if "--init-from" in args else ["--hidden-size", "8"]) + ["--batch-size", "4"]
    elif command == "bench":
        args = _drop_option(_drop_option(args, "--steps"), "--warmup") + ["--steps", "20", "--warmup", "2"]
    return args


def _drop_option(args: list[str], option: str) -> list[str]:
    if option not in args:
        return args
    at = args.index(option)
    return args[:at] + args[at + 2 :]


def _outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in OUTPUT_OPTIONS]


def _stage(workspace: Path, folder: Path, args: list[str]) -> None:
    """Copy into ``folder`` every file or run directory of the workspace the example reads."""
    outputs = set(_outputs(args))
    for arg in args:
        source = workspace / arg
        if arg in outputs or arg.startswith("-") or not source.exists():
            continue
        target = folder / arg
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
            chunk = source.with_name(source.stem + ".chunk.onnx")  # shipped beside its step graph
            if chunk.exists():
                shutil.copy(chunk, target.with_name(chunk.name))


def test_every_command_shows_an_example():
    commands = {name for name, _ in EXAMPLES}
    assert set(cli.commands) - {"help"} <= commands, sorted(set(cli.commands) - commands)


@pytest.mark.parametrize(("command", "line"), EXAMPLES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(EXAMPLES)])
def test_help_example_runs_as_written(workspace, tmp_path, monkeypatch, command, line):
    producer, _, line = line.rpartition("| ") if "| edgernn" in line else ("", "", line)
    words = shlex.split(line, comments=True)
    if words[0] == "torchrun" or "--device" in words:  # parsed only: see the module docstring
        args = words[words.index("edgernn") + 1 :]
        monkeypatch.chdir(workspace)
        cli.commands[args[0]].make_context(args[0], args[1:])
        return
    assert words[0] == "edgernn" and words[1] == command, line
    if "--target" in words and words[words.index("--target") + 1] == "c" and not shutil.which("cc"):
        if os.environ.get("CI") == "true":
            pytest.fail("the C deploy example needs a C compiler (Debian package gcc)", pytrace=False)
        pytest.skip("no C compiler: install the Debian package gcc")
    args = _fast(command, words[1:])
    _stage(workspace, tmp_path, args)
    monkeypatch.chdir(tmp_path)
    stdin = _piped(producer.strip(), workspace) if producer else None
    result = CliRunner().invoke(cli, args, input=stdin)
    missing = re.search(r"not found; install the Debian packages? .*", result.output)
    if result.exit_code == 2 and missing:  # an emulated device's toolchain (bench --device)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{line}: {missing.group(0)}", pytrace=False)
        pytest.skip(missing.group(0))
    assert result.exit_code == 0, f"{line}\n{result.output}"
    for output in _outputs(args):
        assert (tmp_path / output).exists(), f"{line}: {output} was not written"


def test_silero_shaped_model_steps_576_samples_as_the_docs_show(tmp_path):
    """docs/python-api.md: the stepper keeps Silero's state; the caller keeps its 64 samples of context."""
    from edgernn.runtime import Stepper
    from edgernn.runtime.errors import InputError

    path = tmp_path / "silero_vad.onnx"
    path.write_bytes(build_silero_shaped_model().SerializeToString())
    vad = Stepper(path, state_map={"state": "stateN"}, constants={"sr": 16000},
                  state_shapes={"state": (2, "batch", 128)}, data_shape=("batch", 576))  # fmt: skip
    audio = np.sin(np.arange(4 * SILERO_CHUNK) / 7).astype(np.float32)
    context = np.zeros(SILERO_CONTEXT, np.float32)
    for start in range(0, len(audio), SILERO_CHUNK):
        chunk = audio[start : start + SILERO_CHUNK]
        prob = vad.step(np.concatenate([context, chunk]))
        context = chunk[-SILERO_CONTEXT:]
        assert prob.shape == (1,) and 0.0 < float(prob[0]) < 1.0
    before = vad.state["state"].copy()
    with pytest.raises(InputError, match="576"):
        vad.step(audio[:SILERO_CHUNK])  # 512 samples without the context: refused, state untouched
    np.testing.assert_array_equal(vad.state["state"], before)


def _documented_commands() -> list[tuple[str, int, str]]:
    """(file, line number, text after ``edgernn``) of every edgernn command in a fenced code block of the
    README and docs/*.md."""
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        fenced = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            match = re.search(r"(?:^\s*(?:\$ )?|\|\s*)edgernn (.*)", line) if fenced else None
            if match:
                found.append((path.name, number, _command_text(match.group(1))))
            elif fenced and found and found[-1][0] == path.name and line.startswith(" " * 8):
                name, start, text = found[-1]  # a synopsis continued on the next line
                found[-1] = (name, start, f"{text} {_command_text(line)}")
    return found


def _command_text(text: str) -> str:
    """The command without what a shell line adds after it: a pipe, a comment (a ``|`` inside a
    synopsis's brackets is an alternative, kept)."""
    text = text.split("  #")[0]
    depth = 0
    for at, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and text.startswith(" | ", at):
            return text[:at]
    return text


def test_documented_commands_use_real_commands_and_options():
    """Every ``edgernn COMMAND --option`` the README and docs show names a command and options it has."""
    problems = []
    for name, number, text in _documented_commands():
        command = cli.commands.get(text.split()[0]) if text.split() else None
        if command is None:
            problems.append(f"{name}:{number}: no command {text.split()[:1]}")
            continue
        known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        unknown = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - known)
        if unknown:
            problems.append(f"{name}:{number}: edgernn {text.split()[0]} has no {unknown}")
    assert not problems, "\n".join(problems)


# --- the README's and docs' walkthroughs, run in order ---------------------------------------------------

PLACEHOLDER = re.compile(r"\[|\b[A-Z][A-Z_]{2,}\b")  # a synopsis: [options], DATA, RUN_DIR, MODEL.onnx
PATH_LIKE = re.compile(r"[/.](onnx|csv|ts|txt|jsonl)$|/")


def _walkthrough(path: Path) -> list[tuple[int, str, str | None, str, bool]]:
    """The concrete commands of ``path``'s fenced blocks in order: (line, shell producer piped in or
    None, edgernn command, ``$ cat FILE`` content to write or "", whether the block shows it failing)."""
    steps, lines, fenced = [], path.read_text().splitlines(), False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        text = line.removeprefix("$ ").strip()
        if not fenced or PLACEHOLDER.search(text.split("#")[0]):
            continue
        shown = list(_shown_output(lines, number))
        if text.startswith("cat ") and line.startswith("$ "):
            steps.append((number, None, text, "\n".join(shown) + "\n", False))
            continue
        producer, _, command = text.rpartition("| edgernn ") if "| edgernn " in text else ("", "", "")
        if text.startswith("edgernn "):
            producer, command = "", text.removeprefix("edgernn ")
        if command and "tail -f" not in producer:
            failing = any(out.startswith("Error:") for out in shown)
            steps.append((number, producer.strip() or None, _command_text(command), "", failing))
    return steps


def _shown_output(lines: list[str], number: int):
    """The lines a ``$ command`` block shows after line ``number`` (1-based), up to the next command."""
    for line in lines[number:]:
        if line.startswith("$ ") or line.lstrip().startswith("```"):
            return
        yield line


WALKTHROUGHS = ["README.md", "docs/cli.md", "docs/training.md", "docs/quantization.md", "docs/ort.md"]


@pytest.mark.parametrize("document", WALKTHROUGHS)
def test_documented_walkthrough_runs(document, tmp_path, monkeypatch):
    """Each concrete command of the document, in order, in one folder with the bundled data: the ones
    whose input files exist by then (the bundled data, what earlier commands wrote, a ``$ cat`` file)."""
    (tmp_path / "examples").symlink_to(DATA.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    ran = 0
    for number, producer, command, content, failing in _walkthrough(DATA.parent.parent / document):
        if content:  # $ cat FILE: the file as the document shows it
            Path(command.split()[1]).write_text(content)
            continue
        words = [w for w in shlex.split(command, comments=True) if not w.startswith(("2>", ">"))]
        args = _fast(words[0], words)
        inputs = [a for a in args[1:] if PATH_LIKE.search(a) and a not in _outputs(args)]
        if not all(Path(a).exists() for a in inputs):
            continue  # a file of the reader's own (readings.csv, frames.jsonl)
        stdin = (
            subprocess.run(["bash", "-c", producer], capture_output=True, check=True).stdout
            if producer
            else None
        )
        result = CliRunner().invoke(cli, args, input=stdin)
        want = 2 if failing else 0
        assert result.exit_code == want, f"{document}:{number}: edgernn {command}\n{result.output}"
        ran += 1
    assert ran or document not in ("README.md", "docs/cli.md"), f"{document}: no command ran"


def _piped(producer: str, workspace: Path) -> bytes:
    """What the example pipes into edgernn: its shell command, or for a program of the reader's own
    (``PRODUCERS``) a file of the workspace with what that program would write."""
    program = shlex.split(producer)[0]
    if program not in PRODUCERS and shutil.which(program) is None:
        raise AssertionError(f"the example pipes from {program!r}: add what it writes to PRODUCERS")
    command = PRODUCERS.get(program, producer)
    return subprocess.run(["bash", "-c", command], cwd=workspace, capture_output=True, check=True).stdout
