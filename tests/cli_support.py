"""What the command-line tests share: a refusal is one line on stderr, exit code 2, no traceback."""

from __future__ import annotations


def assert_refused(result, *fragments: str) -> str:
    """``result`` (click's CliRunner) exited 2 with one line on stderr holding every fragment; that line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
