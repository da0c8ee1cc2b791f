"""The small family of errors every part of edgernn raises.

Messages say what was expected and what was given. The CLI turns these into one-line messages.
"""


class EdgeRNNError(Exception):
    """Base class for every error edgernn raises on purpose."""


class ContractError(EdgeRNNError):
    """An ONNX file or its metadata does not follow a contract edgernn can run (or is not a model at all)."""


class InputError(EdgeRNNError):
    """An input (tensor, state, argument or file) has the wrong shape, dtype, range or content."""


class ParityError(EdgeRNNError):
    """An exported model disagrees with the PyTorch model it came from. ``report``: what every check
    measured, where the check that raised has it (``edgernn.export.verify.ParityReport``), else None."""

    report = None

    def __init__(self, mismatches: list[str], report=None):
        self.mismatches = list(mismatches)
        self.report = report
        lines = "\n  - ".join(self.mismatches)
        super().__init__(f"export failed {len(self.mismatches)} parity check(s):\n  - {lines}")


class QuantizationError(ParityError):
    """A quantized export was refused: it drifts from its float32 original, loses too much on the task
    metric, or did not really quantize. ``forceable``: forcing would write it (metric and drift only);
    ``hint``: the last line, for a caller that forces otherwise (default: export's ``--force``)."""

    def __init__(self, failures: list[str], *, forceable: bool = False, hint: str | None = None):
        self.mismatches = list(failures)
        self.forceable = forceable
        lines = "\n  - ".join(self.mismatches)
        if hint is None:
            hint = "force=True (edgernn export --force) writes it anyway" if forceable else ""
        hint = f"\n{hint}" if hint else ""
        EdgeRNNError.__init__(
            self, f"quantized export refused, {len(self.mismatches)} check(s) failed:\n  - {lines}{hint}"
        )
