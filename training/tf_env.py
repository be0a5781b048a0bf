"""CPU flags TensorFlow must see before it is first imported."""

import os


def configure() -> None:
    """Cap oneDNN at AVX2 and quiet TensorFlow's start-up logs.

    TensorFlow's fit() corrupts the heap on the AVX-512 CPUs we train on (seen with TF 2.15-2.21);
    capping oneDNN at AVX2 avoids it and keeps oneDNN's speed, unlike TF_ENABLE_ONEDNN_OPTS=0.
    """
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
