"""edgernn: compact recurrent models for the edge.

Kept light on purpose: ``import edgernn.runtime`` must work on a device that has only numpy and
onnxruntime, so nothing here imports torch, onnx or the training code.
"""

__version__ = "0.1.0"
