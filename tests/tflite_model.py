"""Write a small TFLite CNN with the ``flatbuffers`` builder, field by field after TFLite's schema.fbs.

The model, NHWC like every TFLite model: ``input [1, hw, hw, 3]`` -> CONV_2D 3x3 (8 filters, ReLU, FP32
weights) -> CONV_2D 3x3 stride 2 (8 filters, ReLU) whose FP16 weights go through a DEQUANTIZE op (how
TFLite's converter stores FP16 models, as MediaPipe's files do) -> RESHAPE -> FULLY_CONNECTED (10 outputs).
``numpy_reference`` computes the same function in numpy, so a test can check that OpenVINO reads the file
as written.
"""
import flatbuffers
import numpy as np

# schema.fbs enum values
CONV_2D, DEQUANTIZE, FULLY_CONNECTED, RESHAPE = 3, 6, 9, 22
OPT_CONV2D, OPT_FULLY_CONNECTED, OPT_RESHAPE = 1, 8, 17
FLOAT32, FLOAT16, INT32 = 0, 1, 2
RELU = 1


def weights(seed: int = 0, hw: int = 16) -> dict:
    rng = np.random.default_rng(seed)
    flat = (hw // 2) * (hw // 2) * 8
    return {"w1": rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32),      # OHWI
            "b1": rng.normal(0, 0.1, 8).astype(np.float32),
            "w2": rng.normal(0, 0.2, (8, 3, 3, 8)).astype(np.float16),
            "b2": rng.normal(0, 0.1, 8).astype(np.float32),
            "wfc": rng.normal(0, 0.05, (10, flat)).astype(np.float32),      # [out, in]
            "bfc": rng.normal(0, 0.1, 10).astype(np.float32)}


def _vector(b, values, prepend, size):
    b.StartVector(size, len(values), size)
    for v in reversed(values):
        prepend(v)
    return b.EndVector()


def _table(b, fields):
    """fields: (slot, kind, value) with kind in uoffset/int8/uint8/int32/uint32."""
    b.StartObject(1 + max([slot for slot, _, _ in fields], default=-1))
    for slot, kind, value in fields:
        if kind == "uoffset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:
            getattr(b, {"int8": "PrependInt8", "uint8": "PrependUint8", "int32": "PrependInt32",
                        "uint32": "PrependUint32"}[kind])(value)
            b.Slot(slot)
    return b.EndObject()


def _ints(b, values):
    return _vector(b, [int(v) for v in values], b.PrependInt32, 4)


def _offsets(b, offs):
    return _vector(b, offs, b.PrependUOffsetTRelative, 4)


def write_tflite_cnn(path: str, seed: int = 0, hw: int = 16) -> dict:
    w = weights(seed, hw)
    b = flatbuffers.Builder(1 << 16)
    datas = [b""] + [w[k].tobytes() for k in ("w1", "b1", "w2", "b2")] + \
        [np.array([1, -1], np.int32).tobytes()] + [w[k].tobytes() for k in ("wfc", "bfc")]
    buffers = [_table(b, [(0, "uoffset", b.CreateByteVector(d))]) if d else _table(b, [])
               for d in datas]
    flat = (hw // 2) * (hw // 2) * 8
    tensors_spec = [("input", [1, hw, hw, 3], FLOAT32, 0), ("w1", [8, 3, 3, 3], FLOAT32, 1),
                    ("b1", [8], FLOAT32, 2), ("conv1", [1, hw, hw, 8], FLOAT32, 0),
                    ("w2_fp16", [8, 3, 3, 8], FLOAT16, 3), ("w2", [8, 3, 3, 8], FLOAT32, 0),
                    ("b2", [8], FLOAT32, 4), ("conv2", [1, hw // 2, hw // 2, 8], FLOAT32, 0),
                    ("shape", [2], INT32, 5), ("flat", [1, flat], FLOAT32, 0),
                    ("wfc", [10, flat], FLOAT32, 6), ("bfc", [10], FLOAT32, 7), ("logits", [1, 10], FLOAT32, 0)]
    tensors = []
    for name, shape, dtype, buf in tensors_spec:
        name_off, shape_off = b.CreateString(name), _ints(b, shape)
        tensors.append(_table(b, [(0, "uoffset", shape_off), (1, "int8", dtype), (2, "uint32", buf),
                                  (3, "uoffset", name_off)]))
    conv1 = _table(b, [(1, "int32", 1), (2, "int32", 1), (3, "int8", RELU)])
    conv2 = _table(b, [(1, "int32", 2), (2, "int32", 2), (3, "int8", RELU)])
    fc = _table(b, [(0, "int8", 0)])
    reshape = _table(b, [(0, "uoffset", _ints(b, [1, flat]))])
    ops_spec = [(1, [4], [5], 0, None), (0, [0, 1, 2], [3], OPT_CONV2D, conv1),
                (0, [3, 5, 6], [7], OPT_CONV2D, conv2), (3, [7, 8], [9], OPT_RESHAPE, reshape),
                (2, [9, 10, 11], [12], OPT_FULLY_CONNECTED, fc)]
    ops = []
    for opcode, ins, outs, opt_type, opt in ops_spec:
        ins_off, outs_off = _ints(b, ins), _ints(b, outs)
        fields = [(0, "uint32", opcode), (1, "uoffset", ins_off), (2, "uoffset", outs_off)]
        if opt is not None:
            fields += [(3, "uint8", opt_type), (4, "uoffset", opt)]
        ops.append(_table(b, fields))
    codes = [_table(b, [(0, "int8", code), (2, "int32", 1), (3, "int32", code)])
             for code in (CONV_2D, DEQUANTIZE, FULLY_CONNECTED, RESHAPE)]
    sub_name = b.CreateString("main")
    subgraph = _table(b, [(0, "uoffset", _offsets(b, tensors)), (1, "uoffset", _ints(b, [0])),
                          (2, "uoffset", _ints(b, [12])), (3, "uoffset", _offsets(b, ops)),
                          (4, "uoffset", sub_name)])
    desc = b.CreateString("ovquant test CNN")
    model = _table(b, [(0, "uint32", 3), (1, "uoffset", _offsets(b, codes)),
                       (2, "uoffset", _offsets(b, [subgraph])), (3, "uoffset", desc),
                       (4, "uoffset", _offsets(b, buffers))])
    b.Finish(model, file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(b.Output())
    return w


def _conv_same(x, w, b, stride):
    """x [H, W, C] NHWC without batch, w OHWI 3x3, TFLite SAME padding, ReLU."""
    h, wd, _ = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    pad_h = max((oh - 1) * stride + 3 - h, 0)
    pad_w = max((ow - 1) * stride + 3 - wd, 0)
    xp = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.empty((oh, ow, w.shape[0]), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[i * stride:i * stride + 3, j * stride:j * stride + 3, :]
            out[i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return np.maximum(out + b, 0)


def numpy_reference(x: np.ndarray, w: dict) -> np.ndarray:
    """The model's function on x [N, hw, hw, 3]."""
    rows = []
    for img in x.astype(np.float64):
        c1 = _conv_same(img, w["w1"].astype(np.float64), w["b1"], 1)
        c2 = _conv_same(c1, w["w2"].astype(np.float64), w["b2"], 2)
        rows.append(w["wfc"].astype(np.float64) @ c2.reshape(-1) + w["bfc"])
    return np.stack(rows)
