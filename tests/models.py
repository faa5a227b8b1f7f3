"""Small real OpenVINO models built with the opset API, for the tests (no files, no downloads)."""
import numpy as np
import openvino as ov
import openvino.opset13 as ops

RNG_SEED = 0


def _w(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv_bias(x, rng, c_out, k=3, pad=1, name="conv", group=None, stride=1):
    x = x.output(0) if isinstance(x, ov.Node) else x
    c_in = x.get_partial_shape()[1].get_length()
    if group:
        w = ops.constant(_w(rng, c_in, 1, 1, k, k), name=f"{name}/weights")
        y = ops.group_convolution(x, w, [stride, stride], [pad, pad], [pad, pad], [1, 1], name=name)
    else:
        w = ops.constant(_w(rng, c_out, c_in, k, k, scale=1.0 / np.sqrt(c_in * k * k)), name=f"{name}/weights")
        y = ops.convolution(x, w, [stride, stride], [pad, pad], [pad, pad], [1, 1], name=name)
    b = ops.constant(_w(rng, 1, c_out if not group else c_in, 1, 1, scale=0.1), name=f"{name}/bias")
    return ops.add(y, b, name=f"{name}/add")


def conv_net(seed=RNG_SEED, hw=16) -> ov.Model:
    """conv-bias-relu, maxpool, conv-bias-relu, depthwise conv-bias-relu, global avg, FC."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, hw, hw], np.float32, name="image")
    y = ops.relu(conv_bias(x, rng, 8, name="conv1"), name="relu1")
    y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], name="pool1").output(0)
    y = ops.relu(conv_bias(y, rng, 16, name="conv2"), name="relu2")
    y = ops.relu(conv_bias(y, rng, 16, name="dwconv", group=True), name="relu3")
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3])), keep_dims=False, name="gap")
    w = ops.constant(_w(rng, 10, 16), name="fc/weights")
    y = ops.matmul(y, w, False, True, name="fc")
    y = ops.add(y, ops.constant(_w(rng, 1, 10, scale=0.1)), name="fc/add")
    r = ops.result(y, name="logits")
    return ov.Model([r], [x], "conv_net")


def residual_net(seed=RNG_SEED, hw=8) -> ov.Model:
    """conv-relu feeding a conv and a residual Add, then Concat with another branch, then conv."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 4, hw, hw], np.float32, name="input")
    a = ops.relu(conv_bias(x, rng, 8, name="conv1"), name="relu1")
    b = conv_bias(a, rng, 8, name="conv2")
    s = ops.relu(ops.add(a, b, name="residual_add"), name="relu2")
    c = ops.sigmoid(conv_bias(x, rng, 4, name="conv3"), name="sigmoid")
    cat = ops.concat([s, c], axis=1, name="concat")
    y = conv_bias(cat, rng, 6, k=1, pad=0, name="conv4")
    return ov.Model([ops.result(y, name="out")], [x], "residual_net")


def matmul_net(seed=RNG_SEED, tokens=6, hidden=8) -> ov.Model:
    """A MatMul with constant weights, and a MatMul of two activations (attention-like)."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, tokens, hidden], np.float32, name="x")
    q = ops.add(ops.matmul(x, ops.constant(_w(rng, hidden, hidden)), False, True, name="q"),
                ops.constant(_w(rng, hidden, scale=0.1)), name="q/add")
    k = ops.add(ops.matmul(x, ops.constant(_w(rng, hidden, hidden)), False, True, name="k"),
                ops.constant(_w(rng, hidden, scale=0.1)), name="k/add")
    att = ops.softmax(ops.matmul(q, k, False, True, name="qk"), -1, name="softmax")
    y = ops.matmul(att, x, False, False, name="av")
    return ov.Model([ops.result(y, name="out")], [x], "matmul_net")


def int_input_net(seed=RNG_SEED, vocab=20, tokens=5, hidden=8) -> ov.Model:
    """Token ids (i64) -> embedding Gather -> MatMul: the integer input must never be quantized."""
    rng = np.random.default_rng(seed)
    ids = ops.parameter([1, tokens], np.int64, name="input_ids")
    emb = ops.gather(ops.constant(_w(rng, vocab, hidden)), ids, ops.constant(np.int64(0)), name="embedding")
    y = ops.matmul(emb, ops.constant(_w(rng, 4, hidden)), False, True, name="proj")
    return ov.Model([ops.result(y, name="out")], [ids], "int_input_net")


def activations(model: ov.Model, names, samples) -> dict:
    """Reference: the FP32 output 0 of each named node for each sample, with a plain infer request."""
    m = model.clone()
    nodes = {n.get_friendly_name(): n for n in m.get_ordered_ops()}
    m.add_outputs([nodes[n].output(0) for n in names])
    cm = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    k = len(model.outputs)
    out = {n: [] for n in names}
    for s in samples:
        req.infer(s)
        for i, n in enumerate(names):
            out[n].append(np.array(req.get_output_tensor(k + i).data))
    return {n: np.stack(v) for n, v in out.items()}


def random_samples(model: ov.Model, n: int, seed: int = 1, scale: float = 1.0) -> list:
    rng = np.random.default_rng(seed)
    res = []
    for _ in range(n):
        feed = []
        for inp in model.inputs:
            shape = tuple(inp.get_shape())
            if inp.get_element_type() == ov.Type.i64:
                feed.append(rng.integers(0, 20, shape).astype(np.int64))
            else:
                feed.append((rng.standard_normal(shape) * scale).astype(np.float32))
        res.append(feed[0] if len(feed) == 1 else feed)
    return res


# ---- builders added for the MinMax / bias correction / channel alignment tests ----------------------
def big_conv_net(seed=RNG_SEED, hw=16, c=64) -> ov.Model:
    """conv_net with wide layers (~220k weights): most of the .bin is convolution weights."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, hw, hw], np.float32, name="image")
    y = ops.relu(conv_bias(x, rng, c, name="conv1"), name="relu1")
    y = ops.relu(conv_bias(y, rng, 2 * c, name="conv2"), name="relu2")
    y = ops.relu(conv_bias(y, rng, 2 * c, name="conv3"), name="relu3")
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3])), keep_dims=False, name="gap")
    y = ops.matmul(y, ops.constant(_w(rng, 10, 2 * c), name="fc/weights"), False, True, name="fc")
    y = ops.add(y, ops.constant(_w(rng, 1, 10, scale=0.1)), name="fc/add")
    return ov.Model([ops.result(y, name="logits")], [x], "big_conv_net")


def strided_net(seed=RNG_SEED, hw=9, bias_scale=0.1) -> ov.Model:
    """Odd-sized input: conv 3x3 pad 1, depthwise 3x3 stride 2 pad 1, conv 3x3 dilation 2 pad 2 (with
    an asymmetric pad_end), global average, FC. Every layer has a bias."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 4, hw, hw], np.float32, name="input")
    y = ops.relu(conv_bias(x, rng, 8, name="conv1"), name="relu1")
    y = ops.relu(conv_bias(y, rng, 8, name="dwconv", group=True, stride=2), name="relu2")
    w = ops.constant(_w(rng, 6, 8, 3, 3, scale=1.0 / np.sqrt(72)), name="dilconv/weights")
    y = ops.convolution(y, w, [1, 1], [2, 2], [1, 1], [2, 2], name="dilconv")
    y = ops.add(y, ops.constant(_w(rng, 1, 6, 1, 1, scale=bias_scale), name="dilconv/bias"), name="dilconv/add")
    y = ops.relu(y, name="relu3")
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3])), keep_dims=False, name="gap")
    y = ops.matmul(y, ops.constant(_w(rng, 5, 6), name="fc/weights"), False, True, name="fc")
    y = ops.add(y, ops.constant(_w(rng, 1, 5, scale=bias_scale), name="fc/bias"), name="fc/add")
    return ov.Model([ops.result(y, name="out")], [x], "strided_net")


def aca_net(seed=RNG_SEED, hw=8) -> ov.Model:
    """A pair ActivationChannelAlignment aligns: conv 3x3 pad 1 + bias (no activation) -> conv 1x1 + bias,
    then relu, conv 3x3 + bias, relu, global average, FC. The first conv's output channels have very
    different ranges: channels 0-1 are scaled by 10, channel 2 by 0.2, channels 3-4 are shifted by +6/-4."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, hw, hw], np.float32, name="input")
    w1 = _w(rng, 8, 3, 3, 3, scale=1.0 / np.sqrt(27))
    b1 = _w(rng, 1, 8, 1, 1, scale=0.1)
    gain = np.ones(8, np.float32)
    gain[[0, 1]], gain[2] = 10.0, 0.2
    w1 *= gain[:, None, None, None]
    b1 = b1 * gain[None, :, None, None]
    b1[0, 3], b1[0, 4] = b1[0, 3] + 6.0, b1[0, 4] - 4.0
    y = ops.convolution(x, ops.constant(w1, name="conv1/weights"), [1, 1], [1, 1], [1, 1], [1, 1], name="conv1")
    y = ops.add(y, ops.constant(b1.astype(np.float32), name="conv1/bias"), name="conv1/add")
    y = ops.relu(conv_bias(y, rng, 8, k=1, pad=0, name="conv2"), name="relu2")
    y = ops.relu(conv_bias(y, rng, 8, name="conv3"), name="relu3")
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3])), keep_dims=False, name="gap")
    y = ops.matmul(y, ops.constant(_w(rng, 4, 8), name="fc/weights"), False, True, name="fc")
    y = ops.add(y, ops.constant(_w(rng, 1, 4, scale=0.1)), name="fc/add")
    return ov.Model([ops.result(y, name="out")], [x], "aca_net")


def fc_net(seed=RNG_SEED, tokens=6, hidden=8) -> ov.Model:
    """Two biased MatMuls on [1, tokens, hidden]: weights [in, out] (transpose_b=False, one output column
    10x larger than the others), then relu, then weights [out, in] (transpose_b=True)."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, tokens, hidden], np.float32, name="x")
    w = _w(rng, hidden, 5)
    w[:, 2] *= 10
    y = ops.matmul(x, ops.constant(w, name="fc1/weights"), False, False, name="fc1")
    y = ops.relu(ops.add(y, ops.constant(_w(rng, 5, scale=0.1), name="fc1/bias"), name="fc1/add"), name="relu1")
    y = ops.matmul(y, ops.constant(_w(rng, 4, 5), name="fc2/weights"), False, True, name="fc2")
    y = ops.add(y, ops.constant(_w(rng, 1, 1, 4, scale=0.1), name="fc2/bias"), name="fc2/add")
    return ov.Model([ops.result(y, name="out")], [x], "fc_net")


# ---- builders added for the layer-wise tuning tests ---------------------------------------------------
def outlier_conv_net(seed=RNG_SEED, hw=10, outlier=12.0) -> ov.Model:
    """A narrow conv net whose weight rounding matters: in every output channel of each layer one weight is
    ``outlier`` times larger than the others, so per-channel 8-bit steps are coarse for the rest.
    conv 3x3 (3->6) + bias, relu, depthwise 3x3 + bias, relu, conv 1x1 (6->8) + bias, relu, global
    average, FC 8->4 + bias."""
    rng = np.random.default_rng(seed)

    def spiky(*shape, scale):
        w = rng.standard_normal(shape) * scale
        flat = w.reshape(shape[0], -1)
        flat[np.arange(shape[0]), rng.integers(0, flat.shape[1], shape[0])] *= outlier
        return flat.reshape(shape).astype(np.float32)

    def bias(c):
        return ops.constant(_w(rng, 1, c, 1, 1, scale=0.1))

    x = ops.parameter([1, 3, hw, hw], np.float32, name="image")
    y = ops.convolution(x, ops.constant(spiky(6, 3, 3, 3, scale=0.2), name="conv1/weights"), [1, 1], [1, 1],
                        [1, 1], [1, 1], name="conv1")
    y = ops.relu(ops.add(y, bias(6), name="conv1/add"), name="relu1")
    y = ops.group_convolution(y, ops.constant(spiky(6, 1, 1, 3, 3, scale=0.3), name="dwconv/weights"), [1, 1],
                              [1, 1], [1, 1], [1, 1], name="dwconv")
    y = ops.relu(ops.add(y, bias(6), name="dwconv/add"), name="relu2")
    y = ops.convolution(y, ops.constant(spiky(8, 6, 1, 1, scale=0.4), name="conv2/weights"), [1, 1], [0, 0],
                        [0, 0], [1, 1], name="conv2")
    y = ops.relu(ops.add(y, bias(8), name="conv2/add"), name="relu3")
    y = ops.reduce_mean(y, ops.constant(np.array([2, 3])), keep_dims=False, name="gap")
    y = ops.matmul(y, ops.constant(spiky(4, 8, scale=0.4), name="fc/weights"), False, True, name="fc")
    y = ops.add(y, ops.constant(_w(rng, 1, 4, scale=0.1)), name="fc/add")
    return ov.Model([ops.result(y, name="logits")], [x], "outlier_conv_net")


def first_conv_net(seed=RNG_SEED, hw=12, c_out=4) -> ov.Model:
    """One 3x3 convolution (3 -> ``c_out``) + bias on the model input: the first convolution gets the
    saturation fix's 7-bit weight grid, so its weight rounding is what limits its accuracy."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 3, hw, hw], np.float32, name="image")
    y = conv_bias(x, rng, c_out, name="conv1")
    return ov.Model([ops.result(y, name="out")], [x], "first_conv_net")


def encoder_net(seed=RNG_SEED, tokens=8, hidden=16, heads=2, vocab=32, ffn=32, outlier=8.0) -> ov.Model:
    """A BERT-style encoder layer: token ids -> embedding Gather -> LayerNorm (MVN, gamma, beta) -> Q, K, V
    MatMuls -> ScaledDotProductAttention -> output MatMul -> residual Add -> LayerNorm -> FFN (MatMul, Gelu,
    MatMul) -> residual Add. LayerNorm 0's gamma makes channel 3 an outlier (what SmoothQuant is for)."""
    rng = np.random.default_rng(seed)
    i64 = lambda v: ops.constant(np.array(v, np.int64))
    ids = ops.parameter([1, tokens], np.int64, name="input_ids")
    x = ops.gather(ops.constant(_w(rng, vocab, hidden, scale=1.0), name="embeddings"), ids, ops.constant(np.int64(0)),
                   name="embed")

    def layer_norm(t, name, spike=None):
        m = ops.mvn(t, i64([-1]), True, 1e-5, "inside_sqrt", name=f"{name}/mvn")
        gamma = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        if spike is not None:
            gamma[3] = spike
        g = ops.multiply(m, ops.constant(gamma), name=f"{name}/gamma")
        return ops.add(g, ops.constant(_w(rng, hidden, scale=0.1)), name=f"{name}/beta")

    def linear(t, n_in, n_out, name):
        y = ops.matmul(t, ops.constant(_w(rng, n_out, n_in, scale=1.0 / np.sqrt(n_in)), name=f"{name}/weights"),
                       False, True, name=name)
        return ops.add(y, ops.constant(_w(rng, n_out, scale=0.1)), name=f"{name}/bias")

    hd = hidden // heads

    def split_heads(t, name):
        r = ops.reshape(t, i64([1, tokens, heads, hd]), False, name=f"{name}/reshape")
        return ops.transpose(r, i64([0, 2, 1, 3]), name=f"{name}/transpose")

    h = layer_norm(x, "ln0", spike=outlier)
    q, k, v = (split_heads(linear(h, hidden, hidden, n), n) for n in ("q", "k", "v"))
    att = ops.scaled_dot_product_attention(q, k, v, causal=False, name="sdpa")
    att = ops.reshape(ops.transpose(att, i64([0, 2, 1, 3]), name="merge/transpose"), i64([1, tokens, hidden]), False,
                      name="merge/reshape")
    r1 = ops.add(x, linear(att, hidden, hidden, "o"), name="residual1")
    f = ops.gelu(linear(layer_norm(r1, "ln1"), hidden, ffn, "ffn1"), "erf", name="gelu")
    out = ops.add(r1, linear(f, ffn, hidden, "ffn2"), name="residual2")
    return ov.Model([ops.result(out, name="out")], [ids], "encoder_net")
