"""Training, evaluation and ONNX export of facegender's gender classifiers."""

from training import tf_env

# Importing any training module sets TensorFlow's CPU flags first (see tf_env).
tf_env.configure()
