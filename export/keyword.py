"""Export a keyword model: the log-mel front end and the recurrent model in one verified step graph.

The run's RecurrentModel reads normalised log-mel frames; the exported step reads one hop of raw samples
``x`` (batch, hop) float32 in [-1, 1) and carries the frame overlap as the explicit ``audio`` state
(batch, 1, frame - hop) after the recurrent ones (``edgernn.audio`` gives the math). The window and the
DFT are one constant matrix, the power's re^2 + im^2 and the mel bands another, so every target runs it
with MatMul, Mul, Add, Log, Concat and Slice, and nothing is written by hand.

The parity checks are those of every export (``edgernn.export.verify``), against a PyTorch reference
that frames the whole sequence and takes ``torch.fft.rfft`` of each frame: an independent computation
of the front end, not the graph's matrices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch

from edgernn import __version__
from edgernn.audio import dft_matrix, hann, mel_filterbank, stacked_filterbank
from edgernn.export.exporter import ExportReport, quantize_checked, seal, sealed_size, write_pair
from edgernn.export.graph import _cell, _Graph, _input, _make_model, _output, _split_layers, _stack_layers
from edgernn.export.keyword_data import keyword_evaluation_data
from edgernn.export.quality import EvaluationData
from edgernn.export.quantize import QuantizeConfig
from edgernn.export.verify import States, verify_against
from edgernn.models import RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime.audio import FRONT_END_PREFIX, FrontEnd
from edgernn.runtime.contract import InputSpec, ModelInfo, OutputSpec
from edgernn.runtime.errors import InputError


def keyword_info(model: RecurrentModel, fe: FrontEnd, extra: dict) -> ModelInfo:
    """The metadata of the keyword step graph: x is one hop of samples; ``front_end`` records the front
    end and the log-mel normalisation the graph applies."""
    config = model.config
    front_end = {
        **fe.to_dict(),
        "mel_mean": [float(v) for v in config.input_mean],
        "mel_std": [float(v) for v in config.input_std],
    }
    return contract.make_info(
        cell=config.cell,
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        input=InputSpec(kind="features", size=fe.hop, dtype="float32"),
        output=OutputSpec(kind=config.output_kind, size=config.output_size),
        edgernn_version=__version__,
        extra={**extra, "front_end": front_end},
    )


def _front_end(g: _Graph, fe: FrontEnd, audio: str, x: str) -> str:
    """Nodes from x and the audio state to log-mel ``(B, mels)`` (less its running mean when the front end
    has one); writes the ``audio_next`` output."""
    p = FRONT_END_PREFIX
    axis = g.const(f"{p}.axis", np.array([1], np.int64))

    def cut(source: str, start: int, end: int, name: str) -> str:
        begin = g.const(f"{p}.{name}_start", np.array([start], np.int64))
        stop = g.const(f"{p}.{name}_end", np.array([end], np.int64))
        return g.op("Slice", source, begin, stop, axis, name=f"{p}_{name}")

    flat_shape = g.const(f"{p}.flat_shape", np.array([-1, fe.state_size], np.int64))
    state = g.op("Reshape", audio, flat_shape, name=f"{p}_state")
    previous = cut(state, 0, fe.overlap, "previous") if fe.running_ms else state
    frame = g.op("Concat", previous, x, axis=1, name=f"{p}_frame")  # (B, frame)
    tail = cut(frame, fe.hop, fe.frame, "tail")  # (B, overlap)
    spectrum = g.op("MatMul", frame, g.const(f"{p}.dft", dft_matrix(fe)), name=f"{p}_dft")  # (B, 2 bins)
    squared = g.op("Mul", spectrum, spectrum, name=f"{p}_squared")
    mel = g.op("MatMul", squared, g.const(f"{p}.mel", stacked_filterbank(fe)), name=f"{p}_mel")  # (B, mels)
    floored = g.op("Add", mel, g.const(f"{p}.floor", np.array(fe.floor, np.float32)), name=f"{p}_floored")
    log_mel = g.op("Log", floored, name=f"{p}_log_mel")
    state_shape = g.const(f"{p}.state_shape", np.array([-1, 1, fe.state_size], np.int64))
    if not fe.running_ms:
        g.op("Reshape", tail, state_shape, name=contract.AUDIO_STATE[1])
        return log_mel
    start = g.const(f"{p}.running_start", np.array(fe.running_start, np.float32))
    centred = g.op("Sub", log_mel, start, name=f"{p}_centred")
    mean = cut(state, fe.overlap, fe.state_size, "mean")  # (B, mels): the running mean less the start
    step = g.op("Sub", centred, mean, name=f"{p}_step")
    rate = g.const(f"{p}.running_rate", np.array(fe.running_rate, np.float32))
    mean_next = g.op("Add", mean, g.op("Mul", step, rate, name=f"{p}_scaled_step"), name=f"{p}_mean_next")
    both = g.op("Concat", tail, mean_next, axis=1, name=f"{p}_state_next")
    g.op("Reshape", both, state_shape, name=contract.AUDIO_STATE[1])
    return g.op("Sub", centred, mean_next, name=f"{p}_normalised")


def build_keyword_step(model: RecurrentModel, fe: FrontEnd, info: ModelInfo) -> onnx.ModelProto:
    """The single-step graph: front end, normalisation, the recurrent layers, the head."""
    config = model.config
    g = _Graph()
    audio = info.states[-1]
    assert audio.input == contract.AUDIO_STATE[0], "the audio state comes last"
    x = _input(g, model, _front_end(g, fe, audio.input, contract.INPUT_NAME))  # normalised log-mel
    recurrent = info.states[:-1]
    per_layer = [_split_layers(g, s.input, config.num_layers, config.hidden_size) for s in recurrent]
    next_states: list[list[str]] = [[] for _ in recurrent]
    for layer in range(config.num_layers):
        outs = _cell(g, x, [states[layer] for states in per_layer], model, layer)
        for collected, out in zip(next_states, outs, strict=True):
            collected.append(out)
        x = outs[0]
    _output(g, model, x)
    for spec, layers in zip(recurrent, next_states, strict=True):
        _stack_layers(g, layers, spec.output, config.hidden_size)
    return _make_model(g, info)


def keyword_reference(model: RecurrentModel, fe: FrontEnd):
    """The PyTorch side of the parity checks: frames the sequence, ``torch.fft.rfft`` in float64, the
    mel bands and log, the running normalisation if any, then ``model`` (``edgernn.export.verify.Reference``)."""
    window = torch.from_numpy(hann(fe.frame))
    bank = torch.from_numpy(mel_filterbank(fe).astype(np.float64))

    def run(xs: np.ndarray, state: States | None) -> tuple[np.ndarray, States]:
        batch, steps = xs.shape[:2]
        with torch.no_grad():
            audio = (
                torch.zeros(batch, fe.state_size, dtype=torch.float64)
                if state is None
                else torch.from_numpy(state[-1]).reshape(batch, fe.state_size).double()
            )
            previous, mean = audio[:, : fe.overlap], audio[:, fe.overlap :]
            signal = torch.cat(
                [previous, torch.from_numpy(xs).reshape(batch, steps * fe.hop).double()], dim=1
            )
            frames = signal.unfold(1, fe.frame, fe.hop)  # (B, T, frame)
            power = torch.fft.rfft(frames * window, n=fe.fft).abs() ** 2  # (B, T, bins)
            log_mel = torch.log(power @ bank + fe.floor)  # (B, T, mels)
            if fe.running_ms:
                centred = log_mel - torch.tensor(fe.running_start, dtype=torch.float64)
                normalised = []
                for t in range(steps):
                    mean = mean + fe.running_rate * (centred[:, t] - mean)
                    normalised.append(centred[:, t] - mean)
                log_mel = torch.stack(normalised, dim=1)
            recurrent = None if state is None else tuple(torch.from_numpy(s) for s in state[:-1])
            y, next_state = model(log_mel.float(), recurrent)
        tail = torch.cat([signal[:, -fe.overlap :], mean], dim=1).reshape(batch, 1, fe.state_size)
        states = tuple(s.numpy().astype(np.float64) for s in next_state) + (tail.numpy(),)
        return y.numpy().astype(np.float64), states

    return run


def export_keyword(
    model: RecurrentModel,
    path: str | os.PathLike,
    *,
    extra_metadata: dict,
    verify: bool = True,
    quantize: QuantizeConfig | None = None,
    data: EvaluationData | None = None,
) -> ExportReport:
    """Write the keyword step graph of ``model`` (front end from ``extra_metadata['front_end']``),
    verified against ``keyword_reference`` first; quantized and checked on ``data`` when asked. No chunk
    graph (a chunk graph left beside ``path`` is removed)."""
    extra = dict(extra_metadata)
    fe = FrontEnd.from_metadata(extra.pop("front_end", None))
    model = model.eval()
    info = keyword_info(model, fe, extra)
    proto = build_keyword_step(model, fe, info)
    parity = verify_against(keyword_reference(model, fe), proto, info) if verify else None
    float32_size = None
    if quantize is not None and quantize.mode != "none":
        float32_size = sealed_size(proto, info)
        proto, info = quantize_checked(proto, info, quantize, data)
    content, info = seal(proto, info)
    written, _ = write_pair(path, content, None, info)
    return ExportReport(written, len(content), info, parity, float32_size)


def export_keyword_run(
    checkpoint, path: str | os.PathLike, *, verify: bool, quantize, data_path
) -> ExportReport:
    """``export_run`` of a keyword run directory (its checkpoint loaded)."""
    settings = checkpoint.train_config
    extra = {"task": "keyword", **(settings.get("metadata") or {})}
    data = None
    if quantize is not None and quantize.mode != "none":
        source = data_path or settings.get("data")
        if not source or not Path(source).exists():
            raise InputError(
                f"{source}: no such folder; the run was trained on it (give another with --data)"
            )
        data = keyword_evaluation_data(
            FrontEnd.from_metadata(extra["front_end"]), list(extra["classes"]), source,
            validation_fraction=settings.get("validation_fraction", 0.1), seed=settings.get("seed", 0),
            min_validation_cases=settings.get("min_validation_cases", 0),
        )  # fmt: skip
    return export_keyword(
        checkpoint.model, path, extra_metadata=extra, verify=verify, quantize=quantize, data=data
    )
