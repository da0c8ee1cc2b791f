"""C99 for microcontrollers and C apps, generated from the verified step graph (``--target c``).

    sources = generate_sources("model.onnx", name="model", precision="int8")
    report = deploy("model.onnx", "c", "out/")  # through edgernn.export.deploy: writes and verifies

See docs/c.md: the API of the generated files, precision, error codes, fast activations.
"""

from edgernn.export.c.build import build_shared_library, compile_host, run_self_test, verify_host
from edgernn.export.c.generate import PRECISIONS, CSources, generate_sources
from edgernn.export.c.reference import SUPPORTED_OPS
from edgernn.export.c.writer import write

__all__ = [
    "PRECISIONS",
    "SUPPORTED_OPS",
    "CSources",
    "build_shared_library",
    "compile_host",
    "generate_sources",
    "run_self_test",
    "verify_host",
    "write",
]
