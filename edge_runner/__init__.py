"""edge-runner: load a .tflite on a board, check it against golden outputs, time it carefully.

Depends only on numpy, the standard library and one TFLite interpreter (ai-edge-litert,
tflite-runtime or, as a last resort, tensorflow.lite). Never imports TensorFlow eagerly, nor
the host `pipeline` package.

Python API (the host pipeline uses these names):

- ``edge_runner.backends.load(path, threads=1, backend=None, xnnpack=True) -> Runner``
  (``.predict(x)`` float in, float out, ``x`` an array or {input name: array};
  ``.input_names``/``.output_names``; ``.set_input``/``.invoke``/``.get_output``)
- ``edge_runner.bench.benchmark(path, ...) -> dict`` (latency_ms p50/p90/p99/mean/std/cv, ...)
- ``edge_runner.verify.verify(path, golden_npz, ...) -> dict`` (per output, worst one on top)
- ``edge_runner.golden.write_golden(...)``/``read_golden(...)``: the golden .npz layout
- ``edge_runner.tensors.fit(x, input_detail)``: data fitted to an input's shape and dtype
- ``edge_runner.sysinfo.collect() -> dict``
- ``edge_runner.errors.RunnerError``: a user error (the CLI exits 2 with its one-line message)
"""

__version__ = "0.1.0"
