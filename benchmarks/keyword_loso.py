"""Leave one speaker out on the Free Spoken Digit Dataset: train a keyword model on four speakers, test it
on the fifth, each in turn, and print the tables docs/keyword-results.md shows.

Each fold trains with ``edgernn train``'s library call (the keyword task's defaults: augmentation on, a
no-word class, a stratified 10% of the four speakers' clips to pick the kept weights), exports the
verified step graph (front end included), and evaluates the exported file through the stepper on the
held-out speaker's 500 clips: clip accuracy after each clip's last hop, and the spotter on a continuous
stream of those clips with silence and noise between them (``edgernn.runtime.keyword``).

    .venv/bin/python benchmarks/keyword_loso.py --data ../shared/datasets/fsdd --steps 3000
    .venv/bin/python benchmarks/keyword_loso.py --data DIR --speakers lucas --minutes 2 --hidden-size 64
    .venv/bin/python benchmarks/keyword_loso.py --data DIR --reuse     # the table again from OUT's runs
    .venv/bin/python benchmarks/keyword_loso.py --data DIR --init-from OUT --enroll 3 --steps 500 --out ADAPTED
        # each fold's model adapted to 3 clips of each word of the speaker it left out, tested on the rest

Writes ``OUT/results.json`` and ``OUT/table.md`` (OUT: build/keyword_loso by default).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper
from edgernn.runtime.audio import read_clips, write_bundle
from edgernn.runtime.keyword import evaluate_keyword


def run_fold(clips, speaker: str, out: Path, args) -> dict:
    """Train on every speaker but ``speaker`` (or, with ``--reuse``, take the fold's earlier run), export
    float32 and int8, evaluate both on ``speaker``."""
    from edgernn.checkpoint import load_checkpoint
    from edgernn.export import QuantizeConfig
    from edgernn.export.exporter import export_run
    from edgernn.models import count_parameters
    from edgernn.runtime.keyword import classify_clips

    enroll, tested = enrolled(clips, speaker, args.enroll, args.seed)
    held_out = clips.subset(tested)
    fold = out / speaker
    if not (args.reuse and _trained(fold / "run")):
        train_fold(clips, speaker, fold, args, enroll * args.enroll_repeat)
    run = load_checkpoint(fold / "run")
    trained = run.metrics if "steps" in run.metrics else _interrupted(fold / "run")
    report = export_run(fold / "run", fold / "model.onnx")
    scores = evaluate_keyword(Stepper(report.path), held_out)
    int8 = export_run(fold / "run", fold / "model-int8.onnx", quantize=QuantizeConfig("int8", force=True))
    classes = list(report.info.extra["classes"])
    truth = np.array([classes.index(label) for label in held_out.labels])
    beside = {}  # other evaluations of the same clips, each table's second column
    if args.init_from:  # the model the fold started from
        start = evaluate_keyword(Stepper(args.init_from / speaker / "model.onnx"), held_out)
        beside["start"] = {"clip_accuracy": start["clip_accuracy"], "stream": start["stream"]}
    if "weight_average_decay" in run.metrics:  # the same run's last trained weights, not averaged
        last = export_run(trained_copy(fold / "run", fold / "run-trained"), fold / "model-trained.onnx")
        beside["trained_weights"] = evaluate_keyword(Stepper(last.path), held_out)
    return {
        "speaker": speaker,
        "enrolled": len(enroll),
        "clips": scores["clips"],
        "clip_accuracy": scores["clip_accuracy"],
        "int8_clip_accuracy": float(np.mean(classify_clips(Stepper(int8.path), held_out) == truth)),
        "int8_method": int8.info.quantization["method"],
        "stream": scores["stream"],
        "parameters": count_parameters(run.model),
        "model": f"{run.model.config.cell.upper()} {run.model.config.num_layers} x {run.model.config.hidden_size}",
        "onnx_bytes": report.size_bytes,
        "int8_onnx_bytes": int8.size_bytes,
        "train_minutes": trained.get("minutes"),
        "steps": trained["steps"],
        "validation_accuracy": trained.get("best_val_accuracy"),
        "kept_step": trained.get("kept_step", trained.get("best_step")),
        "schedule_steps": trained.get("schedule_steps"),
        "weight_average_decay": run.metrics.get("weight_average_decay"),
        **beside,
    }


def trained_copy(run: Path, copy: Path) -> Path:
    """A run directory beside ``run`` holding its last trained weights (its resume file's) in place of
    the kept averaged ones: what the same training gives without averaging, at its last step."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    copy.mkdir(exist_ok=True)
    with safe_open(str(run / "resume.safetensors"), "np") as f:
        names = f.keys()
        weights = {k[6:]: f.get_tensor(k) for k in names if k.startswith("model.")}
    save_file(weights, str(copy / "model.safetensors"))
    (copy / "config.json").write_text((run / "config.json").read_text())
    return copy


def _trained(run: Path) -> bool:
    """A finished run, or one stopped by Ctrl-C (its kept weights and its resume file)."""
    return (run / "metrics.json").exists() or (run / "resume.safetensors").exists()


def _interrupted(run: Path) -> dict:
    """What a run stopped by Ctrl-C had done, from its resume file: steps, minutes, and the validation
    accuracy of the kept weights (the lowest validation loss)."""
    from safetensors import safe_open

    with safe_open(str(run / "resume.safetensors"), "np") as f:
        state = json.loads(f.metadata()["state"])
    history = state["history"]
    best = int(np.argmin(history["val_loss"]))
    return {
        "steps": state["step"],
        "minutes": state["elapsed"] / 60,
        "best_val_accuracy": history["val_metric"][best],
        "kept_step": history["step"][best],
        "schedule_steps": state["train_config"]["max_steps"],
    }


def _fold_and_say(clips, speaker: str, args) -> dict:
    row = run_fold(clips, speaker, args.out, args)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _fold_worker(job: tuple[str, argparse.Namespace]) -> dict:
    speaker, args = job
    return _fold_and_say(read_clips(args.data), speaker, args)


def fold_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` worker processes (spawned) that stop when this process does, however it is stopped: a
    killed benchmark leaves no fold training on (Linux; elsewhere they finish the fold they are on)."""
    return ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with, initargs=(os.getpid(),)
    )


def _die_with(parent: int) -> None:
    """In a worker: ask the kernel for SIGTERM when the process that started it ends (PR_SET_PDEATHSIG),
    and end now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def enrolled(clips, speaker: str, per_word: int, seed: int) -> tuple[list[int], list[int]]:
    """The held-out speaker's clips: ``per_word`` of each word (drawn with ``seed``) that join the training
    clips (his own recordings, as a user would enrol), and the others, which test."""
    rng = np.random.default_rng(seed)
    enroll, tested = [], []
    for word in sorted(set(clips.labels)):
        his = [
            i
            for i, (s, w) in enumerate(zip(clips.speakers, clips.labels, strict=True))
            if (s, w) == (speaker, word)
        ]
        chosen = set(rng.permutation(his)[:per_word].tolist())
        enroll += sorted(chosen)
        tested += [i for i in his if i not in chosen]
    return enroll, sorted(tested)


def train_fold(clips, speaker: str, fold: Path, args, enroll: list[int] = ()) -> None:
    from edgernn import keyword
    from edgernn.train import configs_for, train_task

    keyword.RUNNING_MS = args.running_ms
    keyword.REDRAW = args.redraw
    keyword.STEP_LABELS = args.step_labels
    if args.word_unjudged is not None:
        keyword.WORD_UNJUDGED = args.word_unjudged
    if args.onset_no_word is not None:
        keyword.ONSET_NO_WORD = args.onset_no_word
    if args.tail_is_word is not None:
        keyword.TAIL_IS_WORD = args.tail_is_word
    changes = {
        "copies": args.copies,
        "speed": args.speed,
        "warp": args.warp,
        "tempo": args.tempo,
        "gain_db": args.gain_db,
        "noise_follows_gain": args.noise_follows_gain,
        "eq_db": args.eq_db,
        "shelf_db": args.shelf_db,
        "gap_s": args.gap_s,
        "lead_ms": args.lead_ms,
        "after_probability": args.after_probability,
    }
    keyword.AUGMENTATION = replace(
        keyword.AUGMENTATION, **{k: v for k, v in changes.items() if v is not None}
    )

    held_in = [i for i, s in enumerate(clips.speakers) if s != speaker] + list(enroll)
    (fold / "data").mkdir(parents=True, exist_ok=True)
    write_bundle(fold / "data" / "train.npz", clips.subset(held_in))
    model_config, train_config = configs_for(
        "keyword",
        {"hidden_size": args.hidden_size, "num_layers": args.num_layers},
        {
            "budget_minutes": None if args.steps else args.minutes,
            "max_steps": args.steps,
            "seed": args.seed,
            "threads": 1,
            "learning_rate": args.learning_rate,
            "every_step_weight": args.every_step_weight,
            "average_decay": args.average_decay,
        },
    )
    start = args.init_from / speaker / "run" if args.init_from else None
    train_task("keyword", fold / "data", fold / "run", None if start else model_config, train_config,
               progress=False, overwrite=True, init_from=start)  # fmt: skip


def table(rows: list[dict], args) -> str:
    first = rows[0]
    minutes = np.mean([r["train_minutes"] for r in rows])
    budget = (
        f"{args.steps:,} training steps of 32 sequences per fold ({minutes:.1f} minutes of wall time on "
        "average), 1 thread."
        if args.steps
        else f"{minutes:.1f} minutes of training per fold (wall time), 1 thread."
    )
    stopped = [r for r in rows if r.get("schedule_steps") and r["steps"] < r["schedule_steps"]]
    if stopped:
        kept = sorted({r["kept_step"] for r in stopped})
        budget = (
            f"the {stopped[0]['schedule_steps']:,}-step schedule (batches of 32 sequences) stopped by Ctrl-C "
            f"after {min(r['steps'] for r in rows):,}-{max(r['steps'] for r in rows):,} steps, the weights "
            f"kept those of step {'/'.join(f'{k:,}' for k in kept)} (lowest validation loss); {minutes:.1f} "
            "minutes of wall time per fold on average, 1 thread."
        )
    lines = [
        f"Model: {first.get('model', f'GRU {args.num_layers} x {args.hidden_size}')}, {first['parameters']:,} "
        "trained parameters (the "
        f"front end's matrices are constants), {first['onnx_bytes'] / 1024:.0f} KiB float32 ONNX, "
        f"{first['int8_onnx_bytes'] / 1024:.0f} KiB int8 ({first['int8_method']}); " + budget,
        "",
        "| held-out speaker | clip accuracy | int8 clip accuracy | words detected (stream) | wrong word | "
        "false alarms / hour | training steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["stream"]
        lines.append(
            f"| {r['speaker']} | {100 * r['clip_accuracy']:.1f}% | {100 * r['int8_clip_accuracy']:.1f}% | "
            f"{s['detected']}/{s['words']} ({s['detected_pct']:.1f}%) | {s['wrong_word']} | "
            f"{s['false_alarms_per_hour']:.1f} | {r['steps']} |"
        )
    accuracies = [100 * r["clip_accuracy"] for r in rows]
    int8 = [100 * r["int8_clip_accuracy"] for r in rows]
    detected = [r["stream"]["detected_pct"] for r in rows]
    alarms = [r["stream"]["false_alarms_per_hour"] for r in rows]
    lines.append(
        f"| **mean** | **{np.mean(accuracies):.1f}%** (lowest {min(accuracies):.1f}%) | {np.mean(int8):.1f}% | "
        f"{np.mean(detected):.1f}% | | {np.mean(alarms):.1f} | |"
    )
    return "\n".join(lines + trained_weights_table(rows) + adapted_table(rows))


def adapted_table(rows: list[dict]) -> list[str]:
    """With --init-from: the model each fold started from beside it, on the same clips."""
    lead = (("his clips that trained", lambda r: r["enrolled"]), ("clips tested", lambda r: r["clips"]))
    intro = "The models the folds started from (--init-from) on the same clips:"
    return side_by_side(rows, "start", intro, ("started from", lambda r: r["start"]), ("adapted", dict), lead)


def trained_weights_table(rows: list[dict]) -> list[str]:
    """With averaged weights: the same runs' last trained weights beside them."""
    rows = [r for r in rows if "trained_weights" in r]
    intro = (
        f"Averaged weights (decay {rows[0]['weight_average_decay']:g} per step) against the same runs' last "
        "trained weights:"
        if rows
        else ""
    )
    return side_by_side(
        rows, "trained_weights", intro, ("averaged", dict), ("trained", lambda r: r["trained_weights"])
    )


def side_by_side(rows: list[dict], key: str, intro: str, first, second, lead=()) -> list[str]:
    """The rows holding ``key``: clip accuracy, words detected and false alarms of two evaluations of
    each fold side by side (``first``, ``second``: a column name and where its evaluation is in a row),
    after the ``lead`` columns, and their means."""
    rows = [r for r in rows if key in r]
    if not rows:
        return []
    metrics = (
        ("clip accuracy", lambda e: 100 * e["clip_accuracy"], "%"),
        ("words detected", lambda e: e["stream"]["detected_pct"], "%"),
        ("false alarms / hour", lambda e: e["stream"]["false_alarms_per_hour"], ""),
    )
    head = [name for name, _ in lead]
    for metric, _, _ in metrics:
        head += [f"{metric}, {first[0]}", second[0]]
    lines = ["", intro, "", f"| held-out speaker | {' | '.join(head)} |", "|---|" + "--:|" * len(head)]
    values = [[get(pick(r)) for _, get, _ in metrics for _, pick in (first, second)] for r in rows]
    units = [unit for _, _, unit in metrics for _ in range(2)]
    for r, row in zip(rows, values, strict=True):
        cells = [str(f(r)) for _, f in lead] + [f"{v:.1f}{u}" for v, u in zip(row, units, strict=True)]
        lines.append(f"| {r['speaker']} | {' | '.join(cells)} |")
    mean = [""] * len(lead) + [f"{v:.1f}{u}" for v, u in zip(np.mean(values, axis=0), units, strict=True)]
    lines.append(f"| **mean** | {' | '.join(mean)} |")
    return lines


def _pair(text: str) -> tuple[float, ...]:
    """A range option's LO,HI."""
    return tuple(float(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the FSDD recordings folder (.wav files)")
    parser.add_argument("--speakers", default=None, help="comma-separated held-out speakers (default: all)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per fold (a budget that "
        "does not depend on the machine's load; default: --minutes)",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per fold (wall time)")
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="peak learning rate (default: the task's)"
    )
    parser.add_argument(
        "--running-ms",
        type=float,
        default=0.0,
        help="the front end's running normalisation (0: off, the default)",
    )
    parser.add_argument(
        "--redraw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the varied training copies afresh every epoch (the default) or once",
    )
    parser.add_argument(
        "--step-labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="label each varied case's steps by what they hear (the default) or all by the case's label",
    )
    parser.add_argument(
        "--word-unjudged",
        type=float,
        default=None,
        help="the share of a word's steps, from its first, that the loss leaves unjudged (default: the task's)",
    )
    parser.add_argument(
        "--onset-no-word",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label a word's unjudged first share no word instead (default: the task's)",
    )
    parser.add_argument(
        "--tail-is-word",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label the steps just after a word (TAIL_MS) as the word, not unjudged (default: the task's)",
    )
    parser.add_argument("--copies", type=int, default=None, help="varied copies of each clip")
    parser.add_argument("--speed", type=_pair, default=None, help="speed perturbation range LO,HI")
    parser.add_argument(
        "--warp",
        type=_pair,
        default=None,
        help="frequency warp range LO,HI (vocal tract length, apart from speed; 1,1: off; default: the task's)",
    )
    parser.add_argument(
        "--tempo",
        type=_pair,
        default=None,
        help="tempo range LO,HI (faster or slower talkers, pitch and spectrum kept; 1,1: off; default: the task's)",
    )
    parser.add_argument(
        "--gain-db", type=_pair, default=None, help="the copies' gain range LO,HI in dB (default: the task's)"
    )
    parser.add_argument(
        "--noise-follows-gain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="noise at its SNR to the word as heard (after the gain), not to the clip as recorded",
    )
    parser.add_argument(
        "--gap-s", type=_pair, default=None, help="the gap after a clip heard before the word, LO,HI seconds"
    )
    parser.add_argument("--lead-ms", type=float, default=None, help="background before the word, up to MS")
    parser.add_argument(
        "--every-step-weight",
        type=float,
        default=None,
        help="the loss's weight on every step (default: the task's)",
    )
    parser.add_argument(
        "--after-probability", type=float, default=None, help="share of the copies followed by background"
    )
    parser.add_argument("--eq-db", type=float, default=None, help="spectral tilt and bow, up to DB")
    parser.add_argument("--shelf-db", type=float, default=None, help="low and high cuts, up to DB")
    parser.add_argument(
        "--average-decay",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this decay per step (0: off; "
        "default: the task's)",
    )
    parser.add_argument(
        "--enroll",
        type=int,
        default=0,
        help="K clips of each word of the held-out speaker join the training clips (the others test)",
    )
    parser.add_argument(
        "--enroll-repeat", type=int, default=1, help="each enrolled clip R times among the training clips"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="an OUT folder of earlier folds: each fold starts from its model (OUT/SPEAKER/run)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at a time (one process each)")
    parser.add_argument("--out", type=Path, default=Path("build/keyword_loso"))
    parser.add_argument("--reuse", action="store_true", help="evaluate the folds' earlier runs, no training")
    parser.add_argument(
        "--rows",
        type=Path,
        default=None,
        help="only the table, from the folds' result lines (JSON, one a line)",
    )
    args = parser.parse_args(argv)
    if args.rows:
        found = [json.loads(line) for line in args.rows.read_text().splitlines() if line.startswith("{")]
        print(table(sorted(found, key=lambda r: r["speaker"]), args))
        return 0
    clips = read_clips(args.data)
    speakers = args.speakers.split(",") if args.speakers else sorted(set(clips.speakers))
    if args.jobs > 1:  # folds in worker processes, each reading the data itself
        with fold_pool(args.jobs) as pool:
            rows = list(pool.map(_fold_worker, [(speaker, args) for speaker in speakers]))
    else:
        rows = [_fold_and_say(clips, speaker, args) for speaker in speakers]
    text = table(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
