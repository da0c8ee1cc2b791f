"""What every command shares: errors as one line, --json, number types, the train extra's import."""

from __future__ import annotations

import sys

import click

from edgernn.runtime.errors import EdgeRNNError, InputError, ParityError


class Group(click.Group):
    """Turns every error into one line on stderr: exit 2 for bad input, 1 for a failed export or run."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except ParityError as exc:
            fail(str(exc), 1)
        except EdgeRNNError as exc:
            fail(" ".join(str(exc).split()), 2)
        except click.Abort:
            fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout.")(
        func
    )


class _FiniteFloat(click.ParamType):
    """A float that is a number: click's float type takes "nan" and "inf"."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


FINITE_FLOAT = _FiniteFloat()


def names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


TRAIN_EXTRA = {"torch", "onnx", "onnxscript", "onnx_ir", "safetensors", "tqdm", "matplotlib"}


def train_extra(command: str, module: str, *names: str):
    """Import a module of the train extra (and take ``names`` from it, which may import more), or say in
    one line (exit 2) what to install."""
    import importlib

    try:
        imported = importlib.import_module(module)
        return tuple(getattr(imported, name) for name in names) if names else imported
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in TRAIN_EXTRA:
            raise
        raise InputError(
            f"edgernn {command} needs the train extra ({missing} is not installed): pip install 'edgernn[train]'"
        ) from None
