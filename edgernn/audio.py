"""The keyword front end's constants and a numpy reference of it, and the augmentation that trains for
speakers and rooms the data never had. numpy only (no torch).

The front end, as the exported step graph computes it from one hop of samples ``x`` (B, hop) and the
``audio`` state (B, 1, frame - hop), the previous frame's tail:

    frame  = concat(audio, x)                                  # (B, frame)
    spec   = frame @ DFT                                       # (B, 2 * bins): Hann window folded in,
                                                               #   re then im of bins 0 .. fft / 2
    mel    = (spec * spec) @ [MEL; MEL]                        # (B, mels): re^2 + im^2 then the bands
    logmel = log(mel + floor)
    audio' = frame[:, hop:]

and, with a running normalisation (``FrontEnd.running_ms``), the band means after the overlap in the
state, as their difference ``m`` from ``running_start``:

    centred = logmel - running_start
    m'      = m + (centred - m) * rate                         # rate = 1 - exp(-hop_ms / running_ms)
    out     = centred - m'

so a stream of hops is framed exactly as ``log_mel`` frames a whole clip starting from zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgernn.runtime.audio import FrontEnd, pink_noise, rms, white_noise


def hann(frame: int) -> np.ndarray:
    """The periodic Hann window, float64 ``(frame,)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame) / frame)


def dft_matrix(fe: FrontEnd) -> np.ndarray:
    """Window and real DFT in one matrix, float32 ``(frame, 2 * bins)``: ``frame @ M`` gives the real parts
    of bins 0 .. fft / 2, then the imaginary parts (the frame zero-padded to ``fft`` points)."""
    bins = fe.fft // 2 + 1
    angle = 2.0 * np.pi * np.outer(np.arange(fe.frame), np.arange(bins)) / fe.fft  # (frame, bins)
    window = hann(fe.frame)[:, None]
    return np.concatenate([window * np.cos(angle), -window * np.sin(angle)], axis=1).astype(np.float32)


def mel_filterbank(fe: FrontEnd, warp: float = 1.0) -> np.ndarray:
    """Triangular filters on the HTK mel scale, float32 ``(bins, mels)``, peak 1, from ``low_hz`` to
    ``high_hz``; a band narrower than one bin still takes its nearest bin. ``warp`` != 1: each bin's
    frequency is first moved by ``warp_frequencies`` (what is heard at f is banded as if at about
    ``warp * f``: a longer or shorter vocal tract; training's augmentation only, never in a graph)."""
    bins = fe.fft // 2 + 1
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(fe.low_hz), to_mel(fe.high_hz), fe.mels + 2))
    freqs = warp_frequencies(np.arange(bins) * fe.sample_rate / fe.fft, warp, fe.sample_rate / 2.0)
    bank = np.zeros((bins, fe.mels))
    for m in range(fe.mels):
        lo, centre, hi = edges[m : m + 3]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
        if not bank[:, m].any():
            bank[int(np.argmin(np.abs(freqs - centre))), m] = 1.0
    return bank.astype(np.float32)


WARP_KNEE = 0.85  # the warp is linear up to this share of the Nyquist frequency (less, when it stretches)


def warp_frequencies(freqs: np.ndarray, warp: float, nyquist: float) -> np.ndarray:
    """Vocal tract length perturbation's piecewise-linear warp (Jaitly and Hinton, 2013), float64: ``f`` to
    ``warp * f`` up to a knee, then a straight line to the Nyquist frequency, which stays where it is (so
    no band is left empty or pushed off the end). ``warp`` 1: ``freqs`` as they are."""
    if warp == 1.0:
        return np.asarray(freqs, np.float64)
    knee = WARP_KNEE * nyquist * min(warp, 1.0) / warp
    freqs = np.asarray(freqs, np.float64)
    above = warp * knee + (nyquist - warp * knee) * (freqs - knee) / (nyquist - knee)
    return np.where(freqs <= knee, warp * freqs, above)


def stacked_filterbank(fe: FrontEnd, warp: float = 1.0) -> np.ndarray:
    """``[MEL; MEL]``, float32 ``(2 * bins, mels)``: applied to the squared re and im parts it sums them
    (``warp``: ``mel_filterbank``'s)."""
    bank = mel_filterbank(fe, warp)
    return np.concatenate([bank, bank], axis=0)


def frames_of(signal: np.ndarray, fe: FrontEnd, tempo: float = 1.0) -> np.ndarray:
    """The frames a stream of hops sees: float64 ``(T, frame)``, T = ceil(n / hop), the clip zero-padded to
    whole hops and preceded by ``frame - hop`` zeros (the initial ``audio`` state).

    ``tempo`` other than 1: the frames of the clip spoken ``tempo`` times as fast, its pitch and spectrum
    as they are: T = ceil(n / (hop * tempo)) frames of the clip's own samples, frame k starting
    ``round(k * hop * tempo)`` samples after frame 0 (a frame is 25 ms of the clip whatever the tempo)."""
    if tempo == 1.0:
        steps = -(-len(signal) // fe.hop)
        starts = np.arange(steps) * fe.hop
    else:
        steps = max(1, int(np.ceil(len(signal) / (fe.hop * tempo))))
        starts = np.round(np.arange(steps) * (fe.hop * tempo)).astype(np.int64)
    padded = np.zeros(max(fe.overlap + len(signal), int(starts[-1]) + fe.frame))
    padded[fe.overlap : fe.overlap + len(signal)] = signal
    index = starts[:, None] + np.arange(fe.frame)[None, :]
    return padded[index]


def log_mel(signal: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """The front end's reference on a whole clip, by FFT: float32 ``(T, mels)``.

    ``signal``: float samples in [-1, 1), ``(n,)``. Computed independently of ``dft_matrix`` (numpy's FFT
    of the windowed, zero-padded frames), so a test can hold the graph's matrix form to it.
    """
    frames = frames_of(signal, fe) * hann(fe.frame)
    power = np.abs(np.fft.rfft(frames, n=fe.fft, axis=1)) ** 2  # (T, bins)
    return np.log(power @ mel_filterbank(fe).astype(np.float64) + fe.floor).astype(np.float32)


def running_normalise(frames: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """The front end's causal normalisation of log-mel ``frames`` ``(T, mels)`` from the initial state, as
    the graph computes it in float32: each band less its exponential moving mean, which starts at
    ``fe.running_start``. ``frames`` as they are without ``fe.running_ms``."""
    if not fe.running_ms:
        return frames
    centred = frames.astype(np.float32) - np.asarray(fe.running_start, np.float32)
    rate, mean = np.float32(fe.running_rate), np.zeros(fe.mels, np.float32)
    out = np.empty_like(centred)
    for t, frame in enumerate(centred):
        mean = mean + (frame - mean) * rate
        out[t] = frame - mean
    return out


def log_mel_fast(
    signal: np.ndarray, fe: FrontEnd, dft: np.ndarray, bank: np.ndarray, tempo: float = 1.0
) -> np.ndarray:
    """``log_mel`` through the graph's own float32 matrices (what training computes, at numpy speed);
    ``tempo``: ``frames_of``'s."""
    frames = frames_of(signal, fe, tempo).astype(np.float32)
    spec = frames @ dft
    return np.log((spec * spec) @ bank + np.float32(fe.floor)).astype(np.float32)


# --- augmentation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """How each training clip is varied (``copies`` varied copies besides the clip itself):

    speed perturbation by a factor in ``speed`` (resampled, so pitch and tempo move together), the
    frequency axis warped by a factor in ``warp`` apart from it (a vocal tract's length: the mel bands
    read the spectrum as if at ``warp`` times its frequencies, ``warp_frequencies``), the tempo by a
    factor in ``tempo`` apart from both (a faster or slower talker: the frames read the copy at that
    rate, ``frames_of``; pitch and spectrum stay), a gain in
    ``gain_db``, up to ``lead_ms``/``trail_ms`` of background before and after the word (a time shift),
    and noise (white or pink) at one of ``snrs_db`` with probability ``noise_probability`` (relative to
    the word as heard, after its gain, with ``noise_follows_gain``; else to the clip as recorded, so
    that a quieter copy is also a noisier one). As in a
    stream: with probability ``context_probability`` another clip and a gap of ``gap_s`` seconds come
    before the word; and
    ``after_probability`` of the clips are also heard followed by ``after_ms`` of background and labelled
    no word (the model learns to let a word go once it is over). On the copy's log-mel frames
    (``vary_features``): a spectral tilt and bow of up to ``eq_db``, a cut of up to ``shelf_db`` at the
    low and at the high end (a microphone's or a channel's band limits), ``band_masks`` masks of up to
    ``band_mask`` mel bands and ``time_masks`` masks of up to ``time_mask`` frames.
    """

    copies: int = 4
    speed: tuple[float, float] = (0.85, 1.15)
    warp: tuple[float, float] = (0.88, 1.12)
    tempo: tuple[float, float] = (1.0, 1.0)
    gain_db: tuple[float, float] = (-18.0, 6.0)
    lead_ms: float = 250.0
    trail_ms: float = 300.0
    snrs_db: tuple[float, ...] = (30.0, 20.0, 15.0, 10.0, 5.0)
    noise_probability: float = 0.7
    noise_follows_gain: bool = False
    context_probability: float = 0.5
    gap_s: tuple[float, float] = (0.4, 1.0)
    after_probability: float = 0.5
    after_ms: tuple[float, float] = (700.0, 1500.0)
    eq_db: float = 6.0
    shelf_db: float = 20.0
    band_masks: int = 2
    band_mask: int = 4
    time_masks: int = 2
    time_mask: int = 8


def change_speed(signal: np.ndarray, factor: float) -> np.ndarray:
    """``signal`` played ``factor`` times as fast (linear interpolation), float32."""
    length = max(2, int(round(len(signal) / factor)))
    positions = np.linspace(0.0, len(signal) - 1, length)
    return np.interp(positions, np.arange(len(signal)), signal).astype(np.float32)


def noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink noise, unit RMS, float32."""
    return white_noise(samples, rng) if rng.random() < 0.5 else pink_noise(samples, rng)


def augment_spans(
    signal: np.ndarray,
    rate: int,
    aug: Augmentation,
    rng: np.random.Generator,
    *,
    before: np.ndarray | None = None,
    trail_ms: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """One varied copy of a clip (float samples in [-1, 1)), float32, clipped to [-1, 1), and where its
    words are, in samples: ``{"word": (start, end)}``, and ``"before": (0, end)`` when another clip comes
    first.

    ``before``: another clip heard first, then ``aug.gap_s`` seconds of background (the word in a stream);
    ``trail_ms``: the range of background after the word (default up to ``aug.trail_ms``)."""
    gain = 10.0 ** (rng.uniform(*aug.gain_db) / 20.0)
    out = change_speed(signal, rng.uniform(*aug.speed)) * gain
    lead = int(rng.uniform(0.0, aug.lead_ms) * rate / 1000.0)
    trail = int(rng.uniform(*(trail_ms or (0.0, aug.trail_ms))) * rate / 1000.0)
    parts = [np.zeros(lead, np.float32), out, np.zeros(trail, np.float32)]
    spans, start = {}, lead
    if before is not None:
        gap = np.zeros(int(rng.uniform(*aug.gap_s) * rate), np.float32)
        level = 10.0 ** (rng.uniform(-12.0, 0.0) / 20.0)
        heard = change_speed(before, rng.uniform(*aug.speed)) * level
        parts = [heard, gap, *parts]
        spans["before"] = (0, len(heard))
        start += len(heard) + len(gap)
    spans["word"] = (start, start + len(out))
    out = np.concatenate(parts)
    if rng.random() < aug.noise_probability:
        snr = aug.snrs_db[rng.integers(len(aug.snrs_db))]
        level = rms(signal) * (gain if aug.noise_follows_gain else 1.0)
        out = out + noise(len(out), rng) * (level * 10.0 ** (-snr / 20.0))
    return np.clip(out, -1.0, 32767 / 32768).astype(np.float32), spans


def no_word_clip(rate: int, edges: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """0.3-1.2 s of what is no word: digital silence, white or pink noise at -70 to -20 dBFS, or a
    clip's own first or last 60 ms (breath, onset, release) in quiet noise. float32."""
    samples = int(rng.uniform(0.3, 1.2) * rate)
    kind = rng.integers(4)
    if kind == 0:
        return np.zeros(samples, np.float32)
    level = 10.0 ** (rng.uniform(-70.0, -20.0) / 20.0)
    background = noise(samples, rng) * level
    if kind == 3 and edges:
        edge = edges[rng.integers(len(edges))]
        start = rng.integers(0, max(1, samples - len(edge)))
        background[start : start + len(edge)] += edge[: samples - start]
    return np.clip(background, -1.0, 32767 / 32768).astype(np.float32)


def clip_edges(signal: np.ndarray, rate: int, ms: float = 60.0) -> list[np.ndarray]:
    """A clip's first and last ``ms`` milliseconds."""
    n = min(len(signal) // 3, int(rate * ms / 1000.0))
    return [signal[:n], signal[-n:]] if n > 0 else []


def vary_features(features: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """A varied copy's log-mel frames ``(T, mels)``: a random spectral tilt and bow of up to ``aug.eq_db``
    (another microphone or room), a low and a high cut of up to ``aug.shelf_db`` over up to a quarter of
    the bands each, then SpecAugment-style masks: ``aug.band_masks`` spans of up to
    ``aug.band_mask`` mel bands and ``aug.time_masks`` spans of up to ``aug.time_mask`` frames, each set
    to the copy's mean. float32."""
    out = features.astype(np.float32, copy=True)
    steps, mels = out.shape
    if aug.eq_db:
        position = np.linspace(-1.0, 1.0, mels)
        tilt, bow = rng.uniform(-aug.eq_db, aug.eq_db, 2)
        out += np.float32(np.log(10.0) / 10.0) * (tilt * position + bow * (position**2 - 1.0 / 3.0)).astype(
            np.float32
        )
    if aug.shelf_db:
        bands = np.arange(mels, dtype=np.float64)
        for distance in (bands, bands[::-1]):  # from the lowest band, then from the highest
            width, depth = rng.uniform(1.0, mels / 4.0), rng.uniform(0.0, aug.shelf_db)
            cut = np.log(10.0) / 10.0 * depth * np.clip(1.0 - distance / width, 0.0, 1.0)
            out -= cut.astype(np.float32)
    fill = out.mean()
    for _ in range(aug.band_masks):
        width = rng.integers(0, aug.band_mask + 1)
        start = rng.integers(0, mels - width + 1)
        out[:, start : start + width] = fill
    for _ in range(aug.time_masks):
        width = min(steps // 5, rng.integers(0, aug.time_mask + 1))
        start = rng.integers(0, steps - width + 1)
        out[start : start + width] = fill
    return out
