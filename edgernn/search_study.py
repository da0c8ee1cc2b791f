"""The Optuna study of ``edgernn search`` (edgernn/search.py): its storage (a SQLite file in the run
directory, or a database server that many workers share), opening or resuming it, and running its trials
on one worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgernn.runtime.errors import InputError
from edgernn.search_interrupt import INTERRUPT

if TYPE_CHECKING:
    from edgernn.search import Search, SearchSettings

STUDY_FILE = "search.db"
DEFAULT_STUDY = "edgernn-search"
RACED_TRIALS_LIMIT = 10  # trials a worker may lose to another that popped the same one (SQLite)


def storage_url(run_dir: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"


def open_study(run_dir: Path, storage: str | None, name: str, direction: str, settings: SearchSettings,
               fingerprint: dict, resume: bool, recipe: dict | None = None):  # fmt: skip
    """Create the study, or load it: with --resume, or when a shared ``storage`` was named (more workers
    join it). A study of another search (other data, device or budget) is refused. A new study's first
    trial is ``recipe`` (the parameters of a draw), when given."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial stopped by Ctrl-C is reported once, here
    rdb = _storage(storage_url(run_dir, storage))
    exists = name in optuna.get_all_study_names(rdb)
    if exists and not resume and storage is None:
        raise InputError(
            f"{run_dir} already holds the search {name!r}; continue it with --resume, or give another -o or --study"
        )
    if resume and not exists and storage is None:
        raise InputError(f"--resume: {run_dir} holds no search {name!r}; start one without --resume")
    directions = [direction, "minimize"] if settings.objectives == 2 else [direction]
    sampler = optuna.samplers.TPESampler(seed=None if exists else settings.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=settings.trial_steps // 3)
    study = optuna.create_study(
        storage=rdb, study_name=name, directions=directions, sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", fingerprint)
        if recipe is not None and not study.get_trials(deepcopy=False):
            study.enqueue_trial(recipe)  # the hand-set recipe first: the search starts from it
    elif stored != fingerprint:
        changed = sorted(k for k in fingerprint if stored.get(k) != fingerprint[k])
        raise InputError(
            f"the study {name!r} is a search with another {', '.join(changed)}: "
            f"{', '.join(f'{k}={stored.get(k)!r}' for k in changed)}; give the same, or another --study"
        )
    return study


def _storage(url: str, attempts: int = 5):
    """Optuna's RDB storage at ``url``. Workers that start together on a new database race to create its
    tables; the one that loses tries again once they exist."""
    import time

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    def make():
        if url.startswith("sqlite:"):  # several workers on one file: wait for the lock, not fail
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)

    for attempt in range(attempts - 1):
        try:
            return make()
        except SQLAlchemyError:
            time.sleep(1.0 + attempt)
    return make()


def trained_trials(study) -> int:
    """Trials that trained (complete, or pruned on their learning curve), every worker's."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if t.user_attrs.get("fits", True))


def run_trials(search: Search, study) -> None:
    """Run trials until the study holds ``trials`` trained ones or this worker's minutes are spent;
    one line per trial through ``search.say``. Ctrl-C propagates (KeyboardInterrupt)."""
    wanted = search.settings.trials
    unfit_limit = 20 * (wanted or 20)

    def after(study, trial) -> None:
        search.say(describe_trial(trial, search.direction))
        INTERRUPT.check()
        if wanted is not None and trained_trials(study) >= wanted:
            study.stop()
        unfit = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("fits") is False)
        if unfit >= unfit_limit:
            search.say(f"stopping: {unfit} drawn configurations did not fit; a looser budget or edgernn plan")
            study.stop()

    if wanted is not None and trained_trials(study) >= wanted:
        return
    timeout = None if search.settings.minutes is None else search.settings.minutes * 60
    with INTERRUPT:
        for attempt in range(RACED_TRIALS_LIMIT + 1):
            try:
                study.optimize(search.objective, timeout=timeout, callbacks=[after], gc_after_trial=True)
                return
            except ValueError as exc:
                if not str(exc).startswith("Cannot tell a COMPLETE trial") or attempt == RACED_TRIALS_LIMIT:
                    raise
                # SQLite has no row locks: two workers can pop the same waiting (enqueued) trial, and the
                # second to finish it finds it told. Its result is the other's to keep; go on.
                search.say("a trial this worker ran was finished first by another worker; going on")
                if wanted is not None and trained_trials(study) >= wanted:
                    return


def describe_trial(trial, direction: str) -> str:
    """One line: the configuration, its value or why it stopped, cycles and flash."""
    params = trial.params
    shape = f"{params.get('cell', '?')} {params.get('num_layers', '?')}x{params.get('hidden_size', '?')}"
    cost = trial.user_attrs.get("measured") or trial.user_attrs.get("predicted") or {}
    where = "measured" if "measured" in trial.user_attrs else "predicted"
    values = trial.values
    if values:
        name = "accuracy" if direction == "maximize" else "val loss"
        outcome = f"{name} {values[0]:.4f}"
    else:
        outcome = trial.user_attrs.get("pruned") or trial.state.name.lower()
    costs = (
        f"; {cost['cycles']:,} cycles, {cost['flash_bytes']:,} B flash ({where})" if "cycles" in cost else ""
    )
    noise = f" input noise {params['input_noise']:g}" if params.get("input_noise") else ""
    settings = f"{params.get('precision', '')} lr {params.get('learning_rate', 0):.4g}{noise}"
    return f"trial {trial.number}: {shape} {settings}: {outcome}{costs}"
