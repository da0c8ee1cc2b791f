"""benchmarks/keyword_loso.py --jobs N: the folds' worker processes end with the benchmark, even when it
is killed outright (no fold left training on, holding a core, with nobody to read its result)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status waits to be read


def test_a_killed_benchmark_takes_its_fold_workers_with_it(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            sys.path.insert(0, {str(BENCHMARKS)!r})
            from keyword_loso import fold_pool

            if __name__ == "__main__":
                with fold_pool(2) as pool:
                    print(pool.submit(os.getpid).result(), flush=True)
                    time.sleep(120)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(parent.stdout.readline())]
        assert _alive(workers[0]) and workers[0] != parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "fold workers outlived the killed benchmark"
    finally:
        parent.kill()
        parent.wait(timeout=30)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
