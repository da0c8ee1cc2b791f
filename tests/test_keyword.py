"""Keyword models: the WAV reader and its refusals, the front end in the step graph against a numpy FFT
reference, the exported graph's parity and contract, the spotter, eval and stream on real clips of the
bundled Free Spoken Digit Dataset subset, and the C target's self-test, float32, int8 and integer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from edgernn.audio import log_mel, running_normalise
from edgernn.cli import cli
from edgernn.runtime import Stepper, contract
from edgernn.runtime.audio import FrontEnd, hops_of, read_bundle, read_clips, read_wav, read_wav_folder
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.keyword import (
    DEFAULT_STABLE_MS,
    KeywordModel,
    Spotter,
    classify_clips,
    clip_logits,
    pcm_hops,
    spot,
)

FSDD = Path(__file__).resolve().parent.parent / "examples" / "data" / "fsdd"


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return path


# --- reading clips ---------------------------------------------------------------------------------------


def test_a_folder_of_wav_files_reads_labels_from_names_and_subfolders(tmp_path):
    clip = read_bundle(FSDD / "jackson.npz").audio[0]
    flat = tmp_path / "flat"
    flat.mkdir()
    write_wav(flat / "yes_01.wav", clip)
    write_wav(flat / "no_take2.wav", clip[:4000])
    clips = read_wav_folder(flat)
    assert clips.rate == 8000 and sorted(clips.labels) == ["no", "yes"]
    np.testing.assert_array_equal(clips.audio[clips.labels.index("yes")], clip)
    nested = tmp_path / "nested"
    (nested / "go").mkdir(parents=True)
    (nested / "stop").mkdir()
    write_wav(nested / "go" / "a.wav", clip, rate=16000)
    write_wav(nested / "stop" / "b.wav", clip, rate=16000)
    assert read_clips(nested).labels == ["go", "stop"] and read_clips(nested).rate == 16000


def test_a_folder_of_bundles_and_wav_files_reads_both(tmp_path):
    """Base recordings in bundles beside a user's own WAV files: every clip, the bundles' first."""
    shutil.copy(FSDD / "george.npz", tmp_path / "george.npz")
    mine = read_bundle(FSDD / "lucas.npz")
    write_wav(tmp_path / "3_me_0.wav", mine.audio[0])
    (tmp_path / "7").mkdir()
    write_wav(tmp_path / "7" / "take.wav", mine.audio[1])
    clips = read_clips(tmp_path)
    george = read_bundle(FSDD / "george.npz")
    assert len(clips) == 52 and clips.labels[:50] == george.labels and clips.labels[50:] == ["3", "7"]
    assert clips.speakers[50:] == ["me", ""]
    np.testing.assert_array_equal(clips.audio[51], mine.audio[1])
    repeated = read_clips(tmp_path, wav_repeat=3)  # the own recordings three times over, the bundle once
    assert len(repeated) == 56 and repeated.labels[50:] == ["3", "7"] * 3
    with pytest.raises(InputError, match="expected both in the folder, found WAV files only"):
        read_clips(tmp_path / "7", wav_repeat=2)
    with pytest.raises(InputError, match="a file; wav_repeat weighs"):
        read_clips(tmp_path / "george.npz", wav_repeat=2)
    write_wav(tmp_path / "9_me_1.wav", mine.audio[2], rate=16000)
    with pytest.raises(InputError, match="16000 Hz, but"):
        read_clips(tmp_path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("stereo", "2 channel"),
        ("8-bit", "8-bit"),
        ("44100", "44100 Hz"),
        ("not-wav", "expected a mono 16-bit PCM WAV file"),
    ],
)
def test_the_reader_refuses_anything_but_mono_16_bit_pcm_at_8_or_16_khz_naming_the_file(
    tmp_path, kind, expected
):
    path = tmp_path / f"1_{kind}.wav"
    samples = np.arange(800, dtype=np.int16)
    if kind == "stereo":
        write_wav(path, samples, channels=2)
    elif kind == "8-bit":
        write_wav(path, samples.astype(np.uint8), width=1)
    elif kind == "44100":
        write_wav(path, samples, rate=44100)
    else:
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(InputError, match=expected) as raised:
        read_clips(tmp_path)
    assert str(path) in str(raised.value)


def test_a_name_without_a_label_and_mixed_rates_are_refused(tmp_path):
    write_wav(tmp_path / "nolabel.wav", np.zeros(800, np.int16))
    with pytest.raises(InputError, match=r"nolabel\.wav: cannot tell its label"):
        read_wav_folder(tmp_path)
    (tmp_path / "nolabel.wav").unlink()
    write_wav(tmp_path / "a_1.wav", np.zeros(800, np.int16))
    write_wav(tmp_path / "b_1.wav", np.zeros(800, np.int16), rate=16000)
    with pytest.raises(InputError, match="expected one rate"):
        read_wav_folder(tmp_path)


def test_the_bundles_hold_the_original_recordings():
    clips = read_bundle(FSDD / "lucas.npz")
    assert len(clips) == 50 and clips.rate == 8000 and clips.labels[:5] == ["0"] * 5
    original = Path(
        os.environ.get("EDGERNN_FSDD", Path(__file__).resolve().parents[3] / "shared/datasets/fsdd")
    )
    if (original / "0_lucas_0.wav").exists():
        np.testing.assert_array_equal(read_wav(original / "0_lucas_0.wav")[0], clips.audio[0])
    assert (FSDD / "README.md").read_text().count("CC BY-SA 4.0") >= 2


# --- the front end in the graph ----------------------------------------------------------------------------


def front_end_graph(fe: FrontEnd) -> bytes:
    """Only the exported front end: x and audio in, log-mel and audio_next out."""
    from edgernn.export.graph import _Graph
    from edgernn.export.keyword import _front_end

    g = _Graph()
    out = _front_end(g, fe, "audio", "x")
    graph = helper.make_graph(
        g.nodes,
        "front_end",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", fe.hop]),
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", 1, fe.state_size]),
        ],
        [
            helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", fe.mels]),
            helper.make_tensor_value_info("audio_next", TensorProto.FLOAT, ["batch", 1, fe.state_size]),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=contract.IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_graphs_front_end_streams_the_numpy_fft_reference_hop_by_hop(rate):
    fe = FrontEnd.for_rate(rate)
    clip = read_bundle(FSDD / "george.npz").audio[7]
    signal = clip.astype(np.float32) / 32768
    session = ort.InferenceSession(front_end_graph(fe), providers=["CPUExecutionProvider"])
    audio = np.zeros((1, 1, fe.overlap), np.float32)
    got = []
    for hop in hops_of(clip, fe.hop):
        mel, audio = session.run(None, {"x": hop[None], "audio": audio})
        got.append(mel[0])
    want = log_mel(signal, fe)
    assert want.shape == (-(-len(clip) // fe.hop), fe.mels)
    np.testing.assert_allclose(np.array(got), want, atol=2e-3)
    assert want.max() > 0 and want.min() < -10  # speech and the silence of the zero-padded start


def test_the_running_normalisation_streams_its_numpy_reference_and_keeps_its_mean_in_the_state():
    bands = log_mel(read_bundle(FSDD / "lucas.npz").audio[0].astype(np.float32) / 32768, FrontEnd())
    fe = replace(FrontEnd(), running_ms=250.0, running_start=tuple(bands.mean(axis=0).tolist()))
    assert fe.state_size == 120 + 32 and abs(fe.running_rate - (1 - np.exp(-10 / 250))) < 1e-12
    assert FrontEnd.from_metadata(json.loads(json.dumps(fe.to_dict()))) == fe
    clip = read_bundle(FSDD / "jackson.npz").audio[11]
    session = ort.InferenceSession(front_end_graph(fe), providers=["CPUExecutionProvider"])
    audio = np.zeros((1, 1, fe.state_size), np.float32)
    got = []
    for hop in hops_of(clip, fe.hop):
        out, audio = session.run(None, {"x": hop[None], "audio": audio})
        got.append(out[0])
    raw = log_mel(clip.astype(np.float32) / 32768, fe)
    want = running_normalise(raw, fe)
    np.testing.assert_allclose(np.array(got), want, atol=3e-3)
    # the state holds the last frame's tail, then the moving mean less its start
    np.testing.assert_allclose(audio[0, 0, 120:], raw[-1] - fe.running_start - want[-1], atol=3e-3)
    assert np.abs(want[:3]).max() > 5 and np.abs(want - raw).max() > 5  # it moves the bands
    with pytest.raises(InputError, match="running_start"):
        replace(fe, running_start=fe.running_start[:31])
    with pytest.raises(ContractError, match="running_ms"):
        FrontEnd.from_metadata({**fe.to_dict(), "running_ms": "fast"})


# --- training data ------------------------------------------------------------------------------------------


def test_the_varied_training_cases_are_drawn_afresh_every_epoch_and_alike_on_a_resume():
    from edgernn.batches import SequenceBatches
    from edgernn.keyword import task_from_clips

    clips = read_bundle(FSDD / "lucas.npz").subset(range(40))
    task = task_from_clips(clips, seed=3)
    train, heard = task.train, task.notes["clips"]["train"]
    again = task_from_clips(clips, seed=3).train
    first = [x.clone() for x, _ in train]
    varied = [i for i, recipe in enumerate(train.recipes) if recipe is not None]
    as_is = [i for i, recipe in enumerate(train.recipes) if recipe is None]
    assert len(as_is) == heard and len(varied) > 4 * heard  # 4 copies of each clip, some heard before a gap
    batches = SequenceBatches(train, batch_size=len(train), seed=0)
    batches.next()  # epoch 0: the cases as first drawn
    assert all(np.array_equal(train[i][0], first[i]) for i in range(len(train)))
    batches.next()  # epoch 1: every varied case drawn again, the clips as they are kept
    changed = [i for i in varied if not np.array_equal(train[i][0], first[i])]
    assert len(changed) == len(varied)
    assert all(np.array_equal(train[i][0], first[i]) for i in as_is)
    assert [train[i][1] for i in range(len(train))] == [label for _, label in again.cases]
    again.set_epoch(1)  # a resumed run at epoch 1 sees exactly the same cases
    assert all(np.array_equal(train[i][0], again[i][0]) for i in varied)


def test_the_shelves_cut_the_lowest_and_highest_bands_by_at_most_their_depth():
    from edgernn.audio import Augmentation, vary_features

    aug = Augmentation(eq_db=0.0, shelf_db=20.0, band_masks=0, time_masks=0)
    rng = np.random.default_rng(0)
    cuts = np.stack([vary_features(np.zeros((5, 32), np.float32), aug, rng)[0] for _ in range(200)])
    db = cuts * 10.0 / np.log(10.0)
    assert db.max() == 0.0 and db.min() >= -20.0 - 1e-4
    assert (db[:, 0] < 0).all() and (db[:, -1] < 0).all() and (db[:, 9:23] == 0).all()
    assert db[:, 0].min() < -15.0 and db[:, -1].min() < -15.0


@pytest.mark.parametrize(("hz", "warp", "moved"), [(1000, 1.12, 1), (1000, 0.88, -1), (2000, 1.12, 2)])
def test_the_frequency_warp_moves_a_tones_mel_peak_by_the_bands_its_warped_frequency_lies_in(hz, warp, moved):
    from edgernn.audio import dft_matrix, log_mel_fast, stacked_filterbank, warp_frequencies

    fe = FrontEnd()
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(4000) / 8000)).astype(np.float32)

    def peak(warp: float) -> int:  # the loudest mel band
        return int(log_mel_fast(tone, fe, dft_matrix(fe), stacked_filterbank(fe, warp))[5:].mean(0).argmax())

    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    centres = np.linspace(mel(fe.low_hz), mel(fe.high_hz), fe.mels + 2)[1:-1]
    assert peak(1.0) == int(np.argmin(np.abs(centres - mel(hz))))  # the nearest band's centre
    assert peak(warp) - peak(1.0) == moved
    assert peak(warp) == int(np.argmin(np.abs(centres - mel(warp * hz))))  # where warp * hz lies
    ends = warp_frequencies(np.array([0.0, 4000.0]), warp, 4000.0)
    assert ends.tolist() == [0.0, 4000.0]  # the Nyquist frequency stays: no band is left empty
    assert np.all(np.diff(warp_frequencies(np.linspace(0, 4000, 129), warp, 4000.0)) > 0)


def test_the_warp_varies_the_copies_alone_and_a_resumed_run_draws_the_same(monkeypatch):
    from edgernn import keyword

    clips = read_bundle(FSDD / "lucas.npz").subset(range(20))
    task = lambda: keyword.task_from_clips(clips, seed=3).train  # noqa: E731
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, warp=(1.0, 1.0)))
    plain = task()
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, warp=(1.12, 1.12)))
    fixed = task()  # one factor: no draw, so the same waveforms as plain, banded otherwise
    copies = [i for i, recipe in enumerate(plain.recipes) if recipe and recipe[0].__name__ == "copy"]
    others = [i for i in range(len(plain)) if i not in copies]
    as_is = [i for i, recipe in enumerate(plain.recipes) if recipe is None]
    assert len(copies) == 4 * len(as_is) and len(others) > len(as_is) > 10
    assert all(not np.array_equal(fixed.cases[i][0], plain.cases[i][0]) for i in copies)
    assert all(np.array_equal(fixed.cases[i][0], plain.cases[i][0]) for i in others)
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, warp=(0.88, 1.12)))
    warped, again = task(), task()
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(warped.cases, again.cases, strict=True))
    warped.set_epoch(2), again.set_epoch(2)
    assert all(np.array_equal(warped[i][0], again[i][0]) for i in copies[:12])


def test_each_step_of_a_varied_case_is_labelled_by_what_it_hears():
    import torch

    from edgernn.audio import Augmentation, augment_spans
    from edgernn.batches import IGNORE, StepLabels, pad_sequences
    from edgernn.keyword import TAIL_MS, task_from_clips

    clips = read_bundle(FSDD / "lucas.npz").subset(range(40))
    word, other = (clips.audio[i].astype(np.float32) / 32768 for i in (0, 1))
    quiet = Augmentation(noise_probability=0.0)
    out, spans = augment_spans(word, 8000, quiet, np.random.default_rng(0), before=other)
    (start, end), (_, heard) = spans["word"], spans["before"]
    assert 0 < heard < start < end <= len(out)  # the clip heard first, the gap, the word, its trail
    assert not out[heard:start].any() and not out[end:].any() and out[start:end].any() and out[:heard].any()

    task = task_from_clips(clips, seed=3)
    classes, tail = task.metadata["classes"], int(TAIL_MS / 10)  # 10 ms hops
    none = classes.index("_none")
    labelled = [(x, label) for x, label in task.train.cases if isinstance(label, StepLabels)]
    first = [(x, label) for x, label in labelled if len(label.spans) == 4]  # another clip heard first
    after = [(x, label) for x, label in labelled if int(label) == none]
    assert first and after
    x, label = first[0]
    (_, before), (gone, ignored), (quiet_from, gap), (word_from, said) = label.spans
    steps = label.steps(len(x))
    assert before not in (none, said) and ignored == IGNORE and gap == none and said == int(label)
    assert (steps[:gone] == before).all() and (steps[gone:quiet_from] == IGNORE).all()
    assert quiet_from == gone + tail and (steps[quiet_from:word_from] == none).all()
    assert (steps[word_from:] == said).all() and 0 < word_from < len(x)
    x, label = after[0]  # a word and then background, labelled no word: the word's steps say the word
    steps = label.steps(len(x))
    said = steps[(steps >= 0) & (steps < none)]
    assert steps[-1] == none and len(said) > 10 and (said == label.spans[-3][1]).all()
    assert (steps == IGNORE).sum() == tail
    plain = task.train.cases[0]  # a clip as it is: its label at every step
    assert not isinstance(plain[1], StepLabels)
    inputs, (lengths, labels, every) = pad_sequences([first[0], after[0], plain])
    assert labels.tolist() == [int(first[0][1]), none, plain[1]] and lengths[2] == len(plain[0])
    assert (every[2, : lengths[2]] == plain[1]).all() and (every[2, lengths[2] :] == IGNORE).all()
    assert torch.equal(every[0, : lengths[0]], first[0][1].steps(len(first[0][0])))


def test_a_words_first_share_can_go_unjudged_or_be_labelled_no_word(monkeypatch):
    from edgernn import keyword
    from edgernn.batches import IGNORE, StepLabels

    clips = read_bundle(FSDD / "lucas.npz").subset(range(20))
    monkeypatch.setattr(keyword, "WORD_UNJUDGED", 0.5)
    for onset_no_word in (False, True):
        monkeypatch.setattr(keyword, "ONSET_NO_WORD", onset_no_word)
        task = keyword.task_from_clips(clips, seed=3)
        none = task.metadata["classes"].index("_none")
        x, label = task.train.cases[0]  # a clip as it is: its first half unjudged (or no word), then the word
        steps = label.steps(len(x))
        half = int(0.5 * len(x))
        assert isinstance(label, StepLabels) and (steps[half:] == int(label)).all()
        assert (steps[:half] == (none if onset_no_word else IGNORE)).all()


def test_the_steps_after_a_word_can_be_labelled_as_the_word(monkeypatch):
    from edgernn import keyword
    from edgernn.batches import IGNORE, StepLabels

    clips = read_bundle(FSDD / "lucas.npz").subset(range(40))
    monkeypatch.setattr(keyword, "TAIL_IS_WORD", True)
    task = keyword.task_from_clips(clips, seed=3)
    none, tail = task.metadata["classes"].index("_none"), int(keyword.TAIL_MS / 10)
    labelled = [(x, label) for x, label in task.train.cases if isinstance(label, StepLabels)]
    x, label = next((x, label) for x, label in labelled if len(label.spans) == 4)  # a clip heard first
    (_, before), (gone, held), (quiet_from, gap), _ = label.spans
    assert held == before != none and gap == none and quiet_from == gone + tail
    x, label = next((x, label) for x, label in labelled if int(label) == none)  # a word, then background
    steps = label.steps(len(x))
    assert IGNORE not in steps.tolist() and steps[-1] == none
    said = steps[steps != none]
    assert len(said) > tail and (said == said[0]).all()  # the word, and its tail, then only no word
    ends = np.flatnonzero(steps != none)[-1] + 1
    assert (steps[ends:] == none).all() and (steps[ends - tail : ends] == said[0]).all()


# --- a trained model: parity, metadata, eval, stream, C ----------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A keyword model with a running normalisation, trained for a few steps on the bundled clips and
    exported (run and ONNX file)."""
    from edgernn import keyword
    from edgernn.export import export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    base = tmp_path_factory.mktemp("keyword")
    config = TrainConfig(budget_minutes=None, max_steps=4, batch_size=8, eval_every=4, warmup_steps=0)
    default, keyword.RUNNING_MS = keyword.RUNNING_MS, 1000.0  # the running normalisation on every target
    try:
        train_task(
            None,
            FSDD,
            base / "run",
            ModelConfig(hidden_size=16),
            config,
            data_options={"augment": False},
            progress=False,
        )
    finally:
        keyword.RUNNING_MS = default
    report = export_run(base / "run", base / "digits.onnx")
    assert report.parity.max_error() < 1e-4
    return base


def test_the_exported_step_takes_a_hop_of_samples_and_carries_the_overlap_as_state(digits):
    stepper = Stepper(digits / "digits.onnx")
    info = stepper.info
    assert info.input.size == 80 and info.input.mean is None
    assert [(s.input, s.shape) for s in info.states] == [("h", (1, 16)), ("audio", (1, 120 + 32))]
    assert info.extra["front_end"]["running_ms"] == 1000.0
    assert info.extra["front_end"]["hop"] == 80 and len(info.extra["front_end"]["mel_mean"]) == 32
    assert info.extra["classes"] == [*map(str, range(10)), "_none"]
    clip = read_bundle(FSDD / "nicolas.npz").audio[3]
    stream = stepper.new_stream()
    hops = hops_of(clip, 80)
    for hop in hops:
        stream.step(hop)
    np.testing.assert_array_equal(stream.state["audio"][0, 0, :120], hops[-2:].reshape(-1)[-120:])


def test_metadata_whose_front_end_does_not_match_the_graph_is_refused(digits):
    info = Stepper(digits / "digits.onnx").info
    doc = json.loads(info.to_json())
    doc["front_end"]["hop"] = 160
    with pytest.raises(ContractError, match="front_end"):
        contract.parse_info(json.dumps(doc))
    doc = json.loads(info.to_json())
    doc["states"] = doc["states"][:1]
    with pytest.raises(ContractError, match="states"):
        contract.parse_info(json.dumps(doc))


def test_the_spotter_smooths_fires_once_per_word_and_waits_out_its_refractory_period():
    model = KeywordModel(FrontEnd(), ("yes", "no", "_none"))
    spotter = Spotter(model, threshold=0.6, smooth_ms=30, refractory_ms=200, stable_ms=0)
    quiet, yes, no = np.array([0, 0, 9.0]), np.array([9.0, 0, 0]), np.array([0, 9.0, 0])
    sequence = [quiet] * 5 + [yes] * 30 + [quiet] * 5 + [yes] * 10 + [no] * 20 + [quiet] * 30 + [no] * 10
    fired = [(i + 1, d.word) for i, x in enumerate(sequence) if (d := spotter.push(x)) is not None]
    # yes fires when its 3-hop mean reaches 0.6 (its second hop, 7); it stays up 30 hops but fires once;
    # the second yes (from hop 41) fires at 42, the quiet having re-armed the spotter; no (from hop 51) is
    # heard only once the quiet has re-armed it again: from hop 101, at 102
    assert fired == [(7, "yes"), (42, "yes"), (102, "no")]
    before = Spotter(
        model, threshold=0.6, smooth_ms=30, refractory_ms=200, stable_ms=0, other_word_rearms=True
    )
    fired = [(i + 1, d.word) for i, x in enumerate(sequence) if (d := before.push(x)) is not None]
    # the rule before: another word re-armed it once the 20-hop refractory period was over (no at 62)
    assert fired == [(7, "yes"), (42, "yes"), (62, "no"), (102, "no")]


def test_a_word_fires_only_once_it_has_led_for_stable_ms():
    model = KeywordModel(FrontEnd(), ("yes", "no", "_none"))  # 10 ms hops
    quiet, yes, no = np.array([0, 0, 9.0]), np.array([9.0, 0, 0]), np.array([0, 9.0, 0])
    # an onset that wavers between the words for 6 hops, then yes for 20
    sequence = [quiet] * 5 + [no, no, yes, yes, no, no] + [yes] * 20 + [quiet] * 30
    spotter = Spotter(model, threshold=0.6, smooth_ms=10, stable_ms=100)
    fired = [(i + 1, d.word) for i, x in enumerate(sequence) if (d := spotter.push(x)) is not None]
    assert fired == [(21, "yes")]  # yes leads from hop 12 and has led 10 hops at 21: no never led long enough
    hasty = Spotter(model, threshold=0.6, smooth_ms=10, stable_ms=0)
    fired = [(i + 1, d.word) for i, x in enumerate(sequence) if (d := hasty.push(x)) is not None]
    assert fired == [(6, "no")]  # without it, the onset's first guess fires and holds the spotter
    assert Spotter(model).stable_ms == DEFAULT_STABLE_MS == 100.0
    with pytest.raises(InputError, match="stable_ms"):
        Spotter(model, stable_ms=-1)


def test_the_stream_score_counts_words_wrong_words_and_false_alarms_late_ones_apart():
    from edgernn.runtime.keyword import Detection, WordStream, score_stream

    words = [(1.0, 1.5, "yes"), (4.0, 4.4, "no"), (8.0, 8.5, "yes")]
    test = WordStream(np.zeros(80_000, np.float32), words, gap_seconds=9.0)
    detections = [
        Detection(1.3, "yes", 0.9),  # detected
        Detection(1.9, "yes", 0.9),  # within 500 ms of the end: the same word again, not counted twice
        Detection(4.8, "yes", 0.9),  # within the window of "no": a wrong word
        Detection(5.2, "no", 0.9),  # 0.8 s after "no" ended: a false alarm, a late decision on it
        Detection(6.5, "no", 0.9),  # 2.1 s after: a false alarm out of the gap
    ]
    doc = score_stream(test, detections)
    assert (doc["detected"], doc["missed"], doc["wrong_word"]) == (1, 2, 1)
    assert (doc["false_alarms"], doc["late_alarms"]) == (2, 1)
    assert doc["false_alarms_per_hour"] == pytest.approx(2 / (9.0 / 3600))


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_int8_that_computes_in_int8_leaves_the_front_end_in_float32(digits, tmp_path, method):
    """The DFT of raw samples would lose the quiet bands' power to 8-bit inputs: dynamic and static int8
    quantize the recurrent part and the head, never the front end's matrices."""
    from edgernn.export import QuantizeConfig, export_run

    report = export_run(
        digits / "run", tmp_path / "q.onnx", quantize=QuantizeConfig("int8", int8_method=method, force=True)
    )
    graph = onnx.load(str(tmp_path / "q.onnx")).graph  # names compacted: found by shape
    matrices = {
        i.name: tuple(i.dims)
        for i in graph.initializer
        if i.data_type == TensorProto.FLOAT and len(i.dims) == 2
    }
    assert sorted(matrices.values()) == [(200, 258), (258, 32)]  # the DFT and the mel bank; no trained weight
    assert [n.op_type for n in graph.node if n.input[-1:] and n.input[-1] in matrices] == ["MatMul", "MatMul"]
    ops = {n.op_type for n in graph.node}
    assert ("MatMulInteger" if method == "dynamic" else "QuantizeLinear") in ops  # the rest computes in int8
    assert report.info.quantization["method"] == method


def test_a_clips_logits_are_its_last_hops_alone_whatever_the_batch(digits):
    stepper = Stepper(digits / "digits.onnx")
    clips = read_bundle(FSDD / "lucas.npz")
    clips = clips.subset(list(range(7)))
    logits = clip_logits(stepper, clips, batch_size=3)  # batches of clips of different lengths
    assert logits.shape == (7, 11) and logits.dtype == np.float32
    hop = KeywordModel.of(stepper.info).front_end.hop
    for i in (0, 4, 6):
        stream = stepper.new_stream(batch_size=1)
        for x in hops_of(clips.audio[i], hop):
            y = stream.step(x[None])
        np.testing.assert_allclose(logits[i], y[0], rtol=1e-5, atol=1e-5)
    assert (classify_clips(stepper, clips) == logits.argmax(axis=1)).all()


def test_eval_reports_clip_accuracy_and_the_spotter_on_a_stream(digits):
    result = CliRunner().invoke(
        cli, ["eval", str(digits / "digits.onnx"), str(FSDD / "yweweler.npz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["clips"] == 50 and 0.0 <= doc["clip_accuracy"] <= 1.0
    stream = doc["stream"]
    assert stream["words"] == 50 and stream["detected"] + stream["missed"] == 50
    assert stream["stream_seconds"] > stream["gap_seconds"] > 50 * 0.8
    assert 0 <= stream["late_alarms"] <= stream["false_alarms"]
    words, mistakes = doc["words"], doc["mistakes"]
    assert sorted(words) == [str(d) for d in range(10)] and all(w["clips"] == 5 for w in words.values())
    right = sum(w["correct"] for w in words.values())
    assert right == round(50 * doc["clip_accuracy"]) and sum(m["clips"] for m in mistakes) == 50 - right
    assert [m["clips"] for m in mistakes] == sorted((m["clips"] for m in mistakes), reverse=True)
    assert all(m["word"] != m["heard"] and m["of"] == 5 for m in mistakes)
    assert doc["spotter"] == {
        "threshold": 0.6,
        "smooth_ms": 100.0,
        "refractory_ms": 600.0,
        "stable_ms": 100.0,
        "match_after_ms": 500.0,
    }
    text = CliRunner().invoke(cli, ["eval", str(digits / "digits.onnx"), str(FSDD / "yweweler.npz")])
    assert text.exit_code == 0 and "clip accuracy" in text.output and "false alarms" in text.output
    top = mistakes[0] if mistakes else None
    said = f"'{top['word']}' heard as '{top['heard']}' in {top['clips']} of 5" if top else "none"
    assert f"  mistakes      {said}" in text.output


def test_clip_mistakes_count_each_word_and_rank_the_mistakes():
    from edgernn.runtime.keyword import clip_mistakes

    said = ["2", "2", "2", "6", "6", "0", "0"]
    heard = ["0", "0", "2", "7", "_none", "0", "0"]
    words, mistakes = clip_mistakes(said, heard)
    assert words == {
        "0": {"clips": 2, "correct": 2},
        "2": {"clips": 3, "correct": 1},
        "6": {"clips": 2, "correct": 0},
    }
    assert mistakes == [
        {"word": "2", "heard": "0", "clips": 2, "of": 3},
        {"word": "6", "heard": "7", "clips": 1, "of": 2},
        {"word": "6", "heard": "_none", "clips": 1, "of": 2},
    ]
    assert clip_mistakes([], []) == ({}, [])


def test_stream_prints_a_line_per_word_from_a_wav_file_and_from_raw_pcm_alike(digits, tmp_path):
    clips = read_bundle(FSDD / "jackson.npz")
    silence = np.zeros(4000, np.int16)
    samples = np.concatenate([silence, clips.audio[10], silence, clips.audio[40], silence])
    wav = write_wav(tmp_path / "two.wav", samples)
    model = str(digits / "digits.onnx")
    # an untrained model: a low threshold makes it speak, which is what this test reads
    from_wav = CliRunner().invoke(cli, ["stream", model, "--wav", str(wav), "--threshold", "0.12"])
    assert from_wav.exit_code == 0, from_wav.output
    lines = from_wav.output.splitlines()
    assert lines, "nothing detected at threshold 0.12"
    for line in lines:
        time_s, word, score = line.split("\t")
        assert time_s.endswith(" s") and 0 < float(time_s[:-2]) <= len(samples) / 8000 + 0.01
        assert word in [*map(str, range(10))] and 0.12 <= float(score) <= 1
    stepper = Stepper(model)
    want = spot(stepper, samples, threshold=0.12)
    assert [f"{d.time_s:.2f} s\t{d.word}\t{d.score:.3f}" for d in want] == lines
    raw = CliRunner().invoke(
        cli, ["stream", model, "--rate", "8000", "--threshold", "0.12"], input=samples.tobytes()
    )
    assert raw.exit_code == 0 and raw.output == from_wav.output
    wrong = CliRunner().invoke(cli, ["stream", model, "--rate", "16000"], input=samples.tobytes())
    assert wrong.exit_code == 2 and "16000 Hz audio; the model takes 8000 Hz" in wrong.output


def test_raw_pcm_arrives_in_hops_and_the_last_is_padded():
    import io

    samples = np.arange(-100, 150, dtype=np.int16)
    hops = list(pcm_hops(io.BytesIO(samples.tobytes()), 80))
    assert len(hops) == 4 and hops[-1][10:].max() == 0
    np.testing.assert_array_equal(np.concatenate(hops)[:250] * 32768, samples.astype(np.float32))
    with pytest.raises(InputError, match="odd byte"):
        list(pcm_hops(io.BytesIO(b"\x01\x02\x03"), 80))


def _need_cc() -> None:
    if shutil.which("cc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C target needs a C compiler (Debian package gcc)", pytrace=False)
        pytest.skip("no C compiler: install the Debian package gcc")


@pytest.mark.parametrize("precision", ["float32", "int8", "integer"])
def test_the_c_target_runs_audio_in_word_scores_out_and_its_self_test_passes(digits, tmp_path, precision):
    """Every precision (integer: the log-mel front end in integers, the running mean in the state)."""
    _need_cc()
    out = tmp_path / precision
    args = ["deploy", str(digits / "digits.onnx"), "--target", "c", "-o", str(out), "--name", "kws"]
    if precision != "float32":
        args += ["--precision", precision, "--data", str(FSDD / "george.npz"), "--force"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "host self-test" in result.output
    header = (out / "kws.h").read_text()
    assert "KWS_INPUT_SIZE" in header and "80" in header
    built = subprocess.run(
        ["cc", "-std=c99", "-O1", "kws.c", "kws_test.c", "-lm", "-o", "selftest"],
        cwd=out,
        capture_output=True,
    )
    assert built.returncode == 0, built.stderr.decode()
    ran = subprocess.run([str(out / "selftest")], capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stdout.decode() + ran.stderr.decode()


def test_a_folder_infers_the_keyword_task_and_a_folder_without_audio_is_refused(tmp_path):
    from edgernn.tasks import infer_task

    assert infer_task(FSDD)[0] == "keyword"
    assert infer_task(FSDD / "lucas.npz")[0] == "keyword"
    (tmp_path / "notes.txt").write_text("no audio here\n")
    result = CliRunner().invoke(cli, ["train", str(tmp_path), "-o", str(tmp_path / "run"), "--steps", "1"])
    assert result.exit_code == 2 and "a folder without .wav files or .npz clip bundles" in result.output
    assert not (tmp_path / "run").exists()
