"""edgernn search --storage on a real PostgreSQL server: two worker processes, one study.

The test starts its own server (Debian's postgresql: initdb in a temporary directory, listening on a unix
socket there only, as an unprivileged user when run as root), runs two ``edgernn search`` workers on one
study with a tiny budget, reads the study back from the server and always stops the server. Without the
server's programs it skips naming the Debian package (and fails under CI=true); psycopg2 (Optuna's
PostgreSQL driver) comes with the ``train`` and ``dev`` extras.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_search import _args, _process, vowels  # noqa: F401  (vowels: the 30-sequence fixture)

pytest.importorskip("optuna", reason="edgernn search needs optuna (pip install 'edgernn[train]')")
USER = "edgernn"  # the database superuser initdb creates (trust authentication on the socket only)
DATABASE = "search"


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _server_bin() -> Path:
    """Debian keeps the server's programs in /usr/lib/postgresql/VERSION/bin, off PATH."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        _missing("PostgreSQL's pg_ctl and initdb not found (Debian package: postgresql)")
    return Path(versions[-1]).parent


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user Debian's package creates."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root and no postgres user to run the server as (Debian package: postgresql)")
    runuser = shutil.which("runuser")
    if runuser is None:
        _missing(
            "running as root without runuser to start the server as postgres (Debian package: util-linux)"
        )
    return [runuser, "-u", "postgres", "--"]


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL server with an empty database: yields its storage URL; always stopped after."""
    pytest.importorskip("psycopg2", reason="Optuna's PostgreSQL driver: pip install psycopg2-binary")
    bin_dir, prefix = _server_bin(), _as_server_user()
    home = Path(tempfile.mkdtemp(prefix="edgernn-pg-"))  # short: a socket path has at most 107 bytes
    if prefix:
        os.chown(home, pwd.getpwnam("postgres").pw_uid, -1)
    data = home / "data"

    def server(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        done = server(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")  # fmt: skip
        assert done.returncode == 0, f"initdb failed: {done.stderr[-1500:]}"
        options = f"-c listen_addresses='' -k {home} -c fsync=off -c full_page_writes=off"
        done = server(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-o", options,
                      "-w", "-t", "60", "start", timeout=90)  # fmt: skip
        started = True
        assert done.returncode == 0, f"pg_ctl start failed: {done.stderr[-800:]}{_log(home)}"
        done = subprocess.run([str(bin_dir / "createdb"), "-h", str(home), "-U", USER, DATABASE],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, f"createdb failed: {done.stderr[-800:]}"
        yield f"postgresql+psycopg2://{USER}@/{DATABASE}?host={home}"
    finally:
        if started:
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "stop"]
            if server(*stop, "-m", "fast", timeout=45).returncode != 0:
                server(*stop, "-m", "immediate", timeout=45)
        shutil.rmtree(home, ignore_errors=True)


def _log(home: Path) -> str:
    log = home / "server.log"
    return "\n" + log.read_text()[-800:] if log.exists() else ""


def _study_trials(url: str, study: str) -> list[tuple[int, str]]:
    """(number, state) of every trial the server holds for ``study``, read with the driver directly."""
    import psycopg2

    host = url.split("host=", 1)[1]
    with psycopg2.connect(host=host, user=USER, dbname=DATABASE) as db, db.cursor() as cursor:
        cursor.execute(
            "select t.number, t.state from trials t join studies s on s.study_id = t.study_id "
            "where s.study_name = %s order by t.number",
            (study,),
        )
        return [(int(number), str(state)) for number, state in cursor.fetchall()]


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(vowels, tmp_path, postgres):  # noqa: F811
    common = ["--trials", "4", "--no-measure", "--storage", postgres, "--study", "shared"]
    workers = [_process(_args(vowels, tmp_path / f"worker{i}", *common)) for i in (0, 1)]
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
        assert "chosen: trial" in stdout
    assert not list(tmp_path.glob("worker*/search.db")), "the study is on the server, not in RUN_DIR"
    # "trial N: ..." for each trial a worker ran ("trial N cross-validated again" is its check of the best)
    ran = [re.findall(r"^trial (\d+): ", stderr, flags=re.MULTILINE) for _, stderr in outputs]
    mine = [{int(number) for number in numbers} for numbers in ran]
    assert mine[0] and mine[1], "each worker ran trials of the shared study"
    assert not mine[0] & mine[1], "no trial ran twice"
    stored = _study_trials(postgres, "shared")
    numbers = [number for number, _ in stored]
    assert len(numbers) == len(set(numbers)) >= 4
    assert mine[0] | mine[1] <= set(numbers), "every trial either worker ran is in the one study"
    finished = [state for _, state in stored if state in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 4, stored
