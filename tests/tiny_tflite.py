"""Real .tflite files written directly with the TFLite flatbuffer schema (no TensorFlow, ~1 ms).

`mlp(input_shape, widths)`: FULLY_CONNECTED layers (ReLU between, softmax at the end) with seeded
random weights. Any interpreter runs them; they keep the device tests free of TensorFlow.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s


def mlp(input_shape=(1, 8, 8, 1), widths=(16, 10), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffers = [s.BufferT()]  # buffer 0: the empty sentinel every model has
    tensors: list = []

    def tensor(shape, name: str, data: np.ndarray | None = None) -> int:
        buf = s.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data.astype(np.float32).tobytes(), dtype=np.uint8)
        buffers.append(buf)
        t = s.TensorT()
        t.shape = np.array(shape, dtype=np.int32)
        t.type = s.TensorType.FLOAT32
        t.buffer = len(buffers) - 1
        t.name = name.encode()
        tensors.append(t)
        return len(tensors) - 1

    def opcode(code: int) -> s.OperatorCodeT:
        oc = s.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = code
        oc.version = 1
        return oc

    ops = []
    x = tensor(input_shape, "input")
    fan_in = int(np.prod(input_shape[1:]))
    for i, width in enumerate(widths):
        w = tensor((width, fan_in), f"w{i}", rng.normal(0, 1 / np.sqrt(fan_in), (width, fan_in)))
        b = tensor((width,), f"b{i}", rng.normal(0, 0.1, width))
        y = tensor((input_shape[0], width), f"dense{i}")
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, np.array([x, w, b], np.int32), np.array([y], np.int32)
        op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
        op.builtinOptions = s.FullyConnectedOptionsT()
        last = i == len(widths) - 1
        op.builtinOptions.fusedActivationFunction = (s.ActivationFunctionType.NONE if last
                                                     else s.ActivationFunctionType.RELU)
        ops.append(op)
        x, fan_in = y, width
    out = tensor((input_shape[0], widths[-1]), "softmax")
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 1, np.array([x], np.int32), np.array([out], np.int32)
    op.builtinOptionsType = s.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = s.SoftmaxOptionsT()
    op.builtinOptions.beta = 1.0
    ops.append(op)

    sg = s.SubGraphT()
    sg.tensors, sg.operators, sg.name = tensors, ops, b"main"
    sg.inputs, sg.outputs = np.array([0], np.int32), np.array([out], np.int32)
    model = s.ModelT()
    model.version, model.description = 3, b"edgepipe test mlp"
    model.operatorCodes = [opcode(s.BuiltinOperator.FULLY_CONNECTED), opcode(s.BuiltinOperator.SOFTMAX)]
    model.subgraphs, model.buffers = [sg], buffers
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
