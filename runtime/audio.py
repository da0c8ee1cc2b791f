"""Audio for keyword models, numpy and the standard library only: WAV files, labelled clip folders,
compact clip bundles, generated noise, and the front end's settings as a model's metadata records them.

A keyword model's step takes one hop of raw samples, float32 in [-1, 1) (16-bit PCM divided by 32768);
its front end (window, DFT, power, mel filterbank, log, normalisation) is in the step graph, and the
overlap between frames is an explicit state (``audio``), so nothing here computes features.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.runtime.errors import ContractError, InputError

SAMPLE_RATES = (8000, 16000)
FRONT_END_PREFIX = "frontend"  # every node and constant of a front end in a step graph starts with it
MAX_MELS = 2048  # fft / 2 at the largest DFT a front end may have
PCM_SCALE = 32768.0  # 16-bit PCM -> [-1, 1)
BUNDLE_SUFFIX = ".npz"
NO_WORD = "_none"  # the class of silence and noise: no word spoken
MAX_CLIP_SECONDS = 60.0


@dataclass
class Clips:
    """Labelled recordings of one sample rate: ``audio[i]`` int16 ``(samples,)``, its label and its name
    (the file, or ``bundle.npz:name``); ``speakers[i]`` where the source says (FSDD names do)."""

    rate: int
    audio: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.audio)

    def subset(self, keep: np.ndarray | list[int]) -> Clips:
        """The clips at the indices ``keep``, in that order."""
        return Clips(
            self.rate,
            [self.audio[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.names[i] for i in keep],
            [self.speakers[i] for i in keep],
        )


# --- WAV files -------------------------------------------------------------------------------------------


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """One WAV file: mono 16-bit PCM at 8 or 16 kHz. Returns ``(samples int16 (n,), sample rate)``.

    Anything else (stereo, 8/24/32-bit, float, compressed, another rate, not a WAV) is an InputError
    naming the file and what it holds.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, frames = (
                f.getnchannels(),
                f.getsampwidth(),
                f.getframerate(),
                f.getnframes(),
            )
            if channels != 1 or width != 2 or rate not in SAMPLE_RATES:
                raise InputError(
                    f"{path}: expected mono 16-bit PCM at 8000 or 16000 Hz, got {channels} channel(s), "
                    f"{8 * width}-bit, {rate} Hz"
                )
            if frames > MAX_CLIP_SECONDS * rate:
                raise InputError(
                    f"{path}: {frames / rate:.1f} s; expected clips of at most {MAX_CLIP_SECONDS:g} s"
                )
            data = f.readframes(frames)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a WAV file") from None
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{path}: expected a mono 16-bit PCM WAV file ({exc})") from None
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if len(samples) == 0:
        raise InputError(f"{path}: no samples; expected a recording")
    return samples, rate


def label_of(path: Path, folder: Path) -> str:
    """A clip's label: its subfolder's name (one folder per label), else the file name up to its first
    ``_`` (``{label}_*.wav``)."""
    if path.parent != folder:
        return path.parent.name
    stem = path.stem
    if "_" not in stem or not stem.split("_", 1)[0]:
        raise InputError(
            f"{path}: cannot tell its label; expected files named {{label}}_*.wav or one subfolder per label"
        )
    return stem.split("_", 1)[0]


def read_wav_folder(folder: str | os.PathLike) -> Clips:
    """Every ``.wav`` under ``folder`` (``{label}_*.wav`` or ``label/*.wav``), one sample rate for all."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not paths:
        raise InputError(
            f"{folder}: no .wav files; expected {{label}}_*.wav files or one subfolder per label"
        )
    clips: Clips | None = None
    for path in paths:
        samples, rate = read_wav(path)
        if clips is None:
            clips = Clips(rate)
        elif rate != clips.rate:
            raise InputError(f"{path}: {rate} Hz, but {paths[0].name} is {clips.rate} Hz; expected one rate")
        clips.audio.append(samples)
        clips.labels.append(label_of(path, folder))
        clips.names.append(str(path))
        clips.speakers.append(_speaker_of(path.stem))
    assert clips is not None
    return clips


def _speaker_of(stem: str) -> str:
    """FSDD's ``{digit}_{speaker}_{take}``: the speaker; '' for other names."""
    parts = stem.split("_")
    return parts[1] if len(parts) == 3 else ""


# --- bundles: one compressed .npz per speaker ------------------------------------------------------------


def write_bundle(path: str | os.PathLike, clips: Clips) -> None:
    """``clips`` as one compressed .npz (no pickle): ``audio`` int16 concatenated, ``offsets`` int64
    ``(n + 1,)``, ``labels``, ``names``, ``speakers`` (unicode arrays) and ``sample_rate``."""
    import io

    from edgernn.runtime.files import atomic_write_bytes

    offsets = np.concatenate([[0], np.cumsum([len(a) for a in clips.audio])]).astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        audio=np.concatenate(clips.audio).astype(np.int16),
        offsets=offsets,
        labels=np.array(clips.labels, dtype=str),
        names=np.array(clips.names, dtype=str),
        speakers=np.array(clips.speakers, dtype=str),
        sample_rate=np.array(clips.rate, dtype=np.int64),
    )
    atomic_write_bytes(path, buffer.getvalue())


def read_bundle(path: str | os.PathLike) -> Clips:
    """A bundle ``write_bundle`` wrote; anything else is an InputError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as doc:
            arrays = {
                key: doc[key] for key in ("audio", "offsets", "labels", "names", "speakers", "sample_rate")
            }
    except KeyError as exc:
        raise InputError(f"{path}: not an edgernn clip bundle (no {exc} array)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: expected an edgernn clip bundle (.npz): {exc}") from None
    audio, offsets, rate = arrays["audio"], arrays["offsets"], int(arrays["sample_rate"])
    n = len(arrays["labels"])
    if (
        audio.dtype != np.int16
        or rate not in SAMPLE_RATES
        or offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(audio)
        or np.any(np.diff(offsets) <= 0)
        or len(arrays["names"]) != n
        or len(arrays["speakers"]) != n
    ):
        raise InputError(f"{path}: an inconsistent clip bundle (int16 audio, offsets, one label per clip)")
    clips = Clips(rate)
    for i in range(n):
        clips.audio.append(audio[offsets[i] : offsets[i + 1]])
    clips.labels = [str(s) for s in arrays["labels"]]
    clips.names = [f"{path.name}:{s}" for s in arrays["names"]]
    clips.speakers = [str(s) for s in arrays["speakers"]]
    return clips


def read_clips(source: str | os.PathLike, wav_repeat: int = 1) -> Clips:
    """Labelled clips from a folder of WAV files, a folder of bundles (or of both: the bundles' clips,
    then the WAV files'), or one bundle. ``wav_repeat``: in a folder of both, the WAV files' clips that
    many times over (a user's own recordings weighed against the bundles of others beside them)."""
    source = Path(source)
    if source.is_file():
        if wav_repeat != 1:
            raise InputError(f"{source}: a file; wav_repeat weighs a folder's WAV files against its bundles")
        if source.suffix.lower() == BUNDLE_SUFFIX:
            return read_bundle(source)
        if source.suffix.lower() == ".wav":
            samples, rate = read_wav(source)
            return Clips(rate, [samples], [label_of(source, source.parent)], [str(source)], [""])
        raise InputError(f"{source}: expected a folder of .wav files or a {BUNDLE_SUFFIX} clip bundle")
    if not source.is_dir():
        raise InputError(f"{source}: no such file or folder; expected a folder of .wav files")
    bundles = [read_bundle(b) for b in sorted(source.glob(f"*{BUNDLE_SUFFIX}"))]
    wav = any(p.suffix.lower() == ".wav" for p in source.rglob("*"))
    if wav_repeat != 1 and not (bundles and wav):
        raise InputError(
            f"{source}: wav_repeat {wav_repeat} weighs WAV files against the bundles beside them; "
            f"expected both in the folder, found {'bundles' if bundles else 'WAV files' if wav else 'neither'} only"
        )
    return merge_clips(bundles + ([read_wav_folder(source)] * wav_repeat if wav or not bundles else []))


def merge_clips(parts: list[Clips]) -> Clips:
    """One set of clips from several of one sample rate."""
    rates = {p.rate for p in parts}
    if len(rates) != 1:
        raise InputError(f"clips of different sample rates {sorted(rates)}; expected one")
    merged = Clips(parts[0].rate)
    for p in parts:
        merged.audio += p.audio
        merged.labels += p.labels
        merged.names += p.names
        merged.speakers += p.speakers
    return merged


def looks_like_audio(path: str | os.PathLike) -> bool:
    """Whether ``path`` is keyword data: a .wav, a clip bundle, or a folder holding either."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob(f"*{BUNDLE_SUFFIX}")) or any(path.rglob("*.wav"))
    return path.suffix.lower() in (BUNDLE_SUFFIX, ".wav")


# --- generated noise -------------------------------------------------------------------------------------


def white_noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white noise, float32 ``(samples,)``."""
    return rng.standard_normal(samples).astype(np.float32)


def pink_noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise, float32 ``(samples,)``: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    scale = np.ones(len(spectrum))
    scale[1:] = 1.0 / np.sqrt(np.arange(1, len(spectrum)))
    noise = np.fft.irfft(spectrum * scale, n=samples)
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) if len(signal) else 0.0


# --- the front end's settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontEnd:
    """A log-mel front end: ``frame`` samples (Hann window) every ``hop`` samples, a ``fft``-point DFT,
    power, ``mels`` triangular mel bands from ``low_hz`` to ``high_hz``, ``log(mel + floor)``.

    ``running_ms`` > 0: causal normalisation, each band less its exponential moving mean (time constant
    ``running_ms``), kept in the ``audio`` state after the frame overlap as its difference from
    ``running_start`` (one value per band: the training frames' mean), so the zero state starts there."""

    sample_rate: int = 8000
    hop: int = 80
    frame: int = 200
    fft: int = 256
    mels: int = 32
    low_hz: float = 20.0
    high_hz: float = 4000.0
    floor: float = 1e-6
    running_ms: float = 0.0
    running_start: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate not in SAMPLE_RATES:
            problems.append(f"sample_rate {self.sample_rate}: expected one of {SAMPLE_RATES}")
        if not 0 < self.hop < self.frame <= self.fft <= 4096:
            problems.append(
                f"expected 0 < hop < frame <= fft <= 4096, got {self.hop}, {self.frame}, {self.fft}"
            )
        if not 1 <= self.mels <= self.fft // 2:
            problems.append(
                f"mels {self.mels}: expected 1 to {self.fft // 2} (half the {self.fft}-point DFT)"
            )
        if not 0 <= self.low_hz < self.high_hz <= self.sample_rate / 2:
            problems.append(f"expected 0 <= low_hz < high_hz <= {self.sample_rate / 2:g}")
        if not 0 < self.floor < 1:
            problems.append(f"floor {self.floor}: expected in (0, 1)")
        if not 0 <= self.running_ms <= 60_000:
            problems.append(f"running_ms {self.running_ms}: expected 0 (off) to 60000")
        if len(self.running_start) != (self.mels if self.running_ms else 0):
            problems.append(
                f"running_start: expected {self.mels if self.running_ms else 0} values "
                f"(one per band with running_ms, none without), got {len(self.running_start)}"
            )
        elif not all(np.isfinite(v) for v in self.running_start):
            problems.append("running_start: expected finite numbers")
        if problems:
            raise InputError("invalid front end: " + "; ".join(problems))

    @property
    def overlap(self) -> int:
        """Samples each frame shares with the one before: the ``audio`` state's size."""
        return self.frame - self.hop

    @property
    def state_size(self) -> int:
        """The ``audio`` state's size: the frame overlap, then the running mean's bands (if any)."""
        return self.overlap + (self.mels if self.running_ms else 0)

    @property
    def running_rate(self) -> float:
        """The moving mean's update per hop: ``mean += rate * (frame - mean)``; 0 without one."""
        return float(1.0 - np.exp(-self.hop_ms / self.running_ms)) if self.running_ms else 0.0

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop / self.sample_rate

    @classmethod
    def for_rate(cls, sample_rate: int, mels: int = 32) -> FrontEnd:
        """25 ms frames, 10 ms hop, the next power of two for the DFT, bands up to Nyquist."""
        hop, frame = sample_rate // 100, sample_rate // 40
        return cls(sample_rate, hop, frame, 1 << (frame - 1).bit_length(), mels, 20.0, sample_rate / 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "log_mel", "sample_rate": self.sample_rate, "hop": self.hop, "frame": self.frame,
            "fft": self.fft, "mels": self.mels, "low_hz": self.low_hz, "high_hz": self.high_hz,
            "floor": self.floor, "window": "hann", "scale": "int16 / 32768",
            **({"running_ms": self.running_ms, "running_start": list(self.running_start)} if self.running_ms else {}),
        }  # fmt: skip

    @classmethod
    def from_metadata(cls, doc: Any) -> FrontEnd:
        """The ``front_end`` entry of a model's metadata (untrusted), validated."""
        if not isinstance(doc, dict) or doc.get("kind") != "log_mel":
            raise ContractError(f"front_end: expected an object of kind 'log_mel', got {doc!r:.80}")
        values = {}
        for name, kind in (("sample_rate", int), ("hop", int), ("frame", int), ("fft", int), ("mels", int)):
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ContractError(f"front_end.{name}: expected an integer, got {value!r:.40}")
            values[name] = value
        for name in ("low_hz", "high_hz", "floor"):
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ContractError(f"front_end.{name}: expected a number, got {value!r:.40}")
            values[name] = float(value)
        running = doc.get("running_ms", 0.0)
        if isinstance(running, bool) or not isinstance(running, (int, float)):
            raise ContractError(f"front_end.running_ms: expected a number, got {running!r:.40}")
        start = doc.get("running_start", [])
        if (
            not isinstance(start, list)
            or len(start) > MAX_MELS
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in start)
        ):
            raise ContractError(
                f"front_end.running_start: expected at most {MAX_MELS} numbers, got {start!r:.60}"
            )
        values["running_ms"], values["running_start"] = float(running), tuple(float(v) for v in start)
        try:
            return cls(**values)
        except InputError as exc:
            raise ContractError(f"front_end: {exc}") from None


def hops_of(samples: np.ndarray, hop: int) -> np.ndarray:
    """A clip as the model's steps: float32 ``(ceil(n / hop), hop)`` in [-1, 1), the last hop zero-padded.
    ``samples``: int16 PCM or float already in [-1, 1)."""
    signal = (
        samples.astype(np.float32) / PCM_SCALE if samples.dtype == np.int16 else samples.astype(np.float32)
    )
    steps = -(-len(signal) // hop)
    padded = np.zeros(steps * hop, dtype=np.float32)
    padded[: len(signal)] = signal
    return padded.reshape(steps, hop)
