"""facegender inference service: face detection plus ONNX gender classification."""

__version__ = "0.1.0"
