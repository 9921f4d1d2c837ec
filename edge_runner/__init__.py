"""edge-runner: load a .tflite on a board, check it against golden outputs, time it carefully.

Depends only on numpy, the standard library and one TFLite interpreter (ai-edge-litert,
tflite-runtime or, as a last resort, tensorflow.lite). Never imports TensorFlow eagerly, nor
the host `pipeline` package.
"""

__version__ = "0.1.0"
