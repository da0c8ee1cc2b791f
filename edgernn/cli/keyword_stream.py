"""Keyword models on the command line: the spotter's options, and ``edgernn stream --wav / --rate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import click

STABLE_HELP = "keyword: how long a word must lead at or above the threshold before it fires (default 100)."


def keyword_options(command):
    """The spotter's options of ``edgernn eval`` for keyword models (docs/keyword.md)."""
    options = [
        click.option(
            "--threshold",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            help="keyword: the spotter's threshold (default 0.6).",
        ),
        click.option(
            "--smooth-ms", type=click.FloatRange(min=0), help="keyword: posterior smoothing (default 100)."
        ),
        click.option(
            "--refractory-ms",
            type=click.FloatRange(min=0),
            help="keyword: quiet time after a word (default 600).",
        ),
        click.option("--stable-ms", type=click.FloatRange(min=0), help=STABLE_HELP),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def spotter_options(given: dict[str, Any]) -> dict[str, Any]:
    """The options given (None: the spotter's default)."""
    return {k: v for k, v in given.items() if v is not None}


def is_keyword(stepper: Any) -> bool:
    from edgernn.runtime.keyword import is_keyword_model

    return is_keyword_model(stepper.info)


def stream_words(
    stepper: Any, source: BinaryIO, wav: Path | None, rate: int | None, spotter: dict[str, Any], as_json: bool
) -> None:
    """One line per word heard, echoed (and flushed) as soon as the hop that detects it is stepped."""
    from edgernn.runtime.audio import hops_of, read_wav
    from edgernn.runtime.errors import InputError
    from edgernn.runtime.keyword import KeywordModel, check_rate, pcm_hops, spot_hops

    model = KeywordModel.of(stepper.info)
    if wav is not None and rate is not None:
        raise InputError("give --wav FILE or raw PCM with --rate HZ, not both")
    if wav is not None:
        samples, wav_rate = read_wav(wav)
        check_rate(wav_rate, model.front_end)
        hops = iter(hops_of(samples, model.front_end.hop))
    elif rate is not None:
        check_rate(rate, model.front_end)
        hops = pcm_hops(source, model.front_end.hop)
    else:
        raise InputError(
            f"a keyword model hears audio: give --wav FILE, or raw 16-bit PCM on SOURCE with --rate "
            f"{model.front_end.sample_rate}"
        )
    for d in spot_hops(stepper, hops, **spotter):
        if as_json:
            click.echo(json.dumps({"time_s": round(d.time_s, 3), "word": d.word, "score": round(d.score, 4)}))
        else:
            click.echo(f"{d.time_s:.2f} s\t{d.word}\t{d.score:.3f}")
