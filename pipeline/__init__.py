"""edgepipe: shrink Keras models onto edge boards.

TF-MOT needs Keras 2 (``tf_keras``). ``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is
imported anywhere, so it is set here, first thing, and every module of the pipeline is imported
through this package.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
