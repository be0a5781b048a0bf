"""facegender inference service: face detection plus ONNX gender classification."""
