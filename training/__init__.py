"""Training, evaluation and ONNX export of facegender's gender classifiers."""
