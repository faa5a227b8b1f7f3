#!/usr/bin/env python3
"""Build the example shipped with ovquant (``ovquant demo``): a small Fashion-MNIST CNN and 1000 test images.

Development-time only (needs torch; ovquant itself does not). Run from the repository root:

    python tools/train_demo_model.py [--out core/data] [--epochs 3]

Reads the Fashion-MNIST idx files of Debian's ``dataset-fashion-mnist`` (MIT) from
/usr/share/datasets/fashion-mnist/ (or --mnist-dir) with numpy, trains conv-BN-ReLU-maxpool x3 + 2 FC with fixed
seeds, and writes into --out (the package data folder ``ovquant/data/``):

  demo_cnn.xml/.bin  FP32 OpenVINO IR, static batch 1, input ``image`` f32 [1,1,28,28], output ``logits`` [1,10]
  demo_data.npz      ``images`` uint8 [1000,28,28] (the first 1000 official test images, raw pixels),
                     ``labels`` uint8 [1000], ``mean``/``std`` float32 scalars: feed (images/255 - mean)/std
                     as float32 [N,1,28,28]
  demo_meta.json     preprocessing, class names, training settings, FP32 accuracy measured with OpenVINO
"""
import argparse
import gzip
import json
import os
import time

import numpy as np

SEED = 0
N_DEMO = 1000
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


def build_net(nn):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),    # 14x14
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 7x7
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),   # 3x3
        nn.Flatten(), nn.Linear(64 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, 10))


def ov_top1(xml, x, y):
    import openvino as ov
    cm = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    pred = np.array([int(np.argmax(req.infer({0: x[i:i + 1]})[0])) for i in range(len(x))])
    return float((pred == y).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "core", "data"))
    ap.add_argument("--mnist-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()

    import torch
    import openvino as ov
    nn = torch.nn
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    d = a.mnist_dir
    xtr_u8 = load_idx(f"{d}/train-images-idx3-ubyte.gz")
    ytr = load_idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte_u8 = load_idx(f"{d}/t10k-images-idx3-ubyte.gz")
    yte = load_idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    xtr = xtr_u8.astype(np.float32)[:, None] / 255
    mean, std = np.float32(xtr.mean()), np.float32(xtr.std())
    norm = lambda u8: ((u8.astype(np.float32)[:, None] / 255 - mean) / std).astype(np.float32)
    xtr, xte = norm(xtr_u8), norm(xte_u8)

    net = build_net(nn)
    n_params = sum(p.numel() for p in net.parameters())
    bs = 128
    steps = a.epochs * ((len(xtr) + bs - 1) // bs)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 5e-3, total_steps=steps)
    Xt, Yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(SEED)
    t = time.time()
    for ep in range(a.epochs):
        net.train()
        perm = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), bs):
            idx = perm[i:i + bs]
            loss = nn.functional.cross_entropy(net(Xt[idx]), Yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {ep + 1}/{a.epochs} loss {loss.item():.3f} ({time.time() - t:.0f}s)", flush=True)
    train_s = time.time() - t
    net.eval()
    with torch.no_grad():
        torch_top1 = float((net(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())

    ovm = ov.convert_model(net, example_input=torch.zeros(1, 1, 28, 28), input=[(1, 1, 28, 28)])
    ovm.inputs[0].get_tensor().set_names({"image"})
    ovm.inputs[0].get_node().set_friendly_name("image")
    ovm.outputs[0].get_tensor().set_names({"logits"})
    os.makedirs(a.out, exist_ok=True)
    xml = os.path.join(a.out, "demo_cnn.xml")
    ov.save_model(ovm, xml, compress_to_fp16=False)

    np.savez_compressed(os.path.join(a.out, "demo_data.npz"), images=xte_u8[:N_DEMO], labels=yte[:N_DEMO].astype(np.uint8),
                        mean=mean, std=std)
    top1_demo = ov_top1(xml, xte[:N_DEMO], yte[:N_DEMO])
    top1_all = ov_top1(xml, xte, yte)
    meta = {
        "model": f"demo_cnn: 3x (conv3x3-BN-ReLU-maxpool2) 16/32/64 ch + FC 576-64-10, {n_params} params, FP32 IR",
        "input": {"name": "image", "shape": [1, 1, 28, 28], "dtype": "f32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, 10]},
        "preprocessing": f"x = (pixels/255 - mean)/std as float32, mean={float(mean):.6f}, std={float(std):.6f} "
                         "(Fashion-MNIST train-set statistics)",
        "norm_mean": float(mean), "norm_std": float(std),
        "classes": CLASSES,
        "data": {"source": "Fashion-MNIST (Debian dataset-fashion-mnist, MIT), official test set",
                 "demo_images": f"first {N_DEMO} test images (demo_data.npz: images uint8, labels uint8, mean, std)"},
        "training": {"train_images": len(xtr), "epochs": a.epochs, "batch": bs,
                     "optimizer": "AdamW lr 2e-3 wd 1e-4, OneCycle max 5e-3", "seed": SEED,
                     "torch": torch.__version__, "train_s": round(train_s, 1)},
        "fp32_top1": {"demo_1000": top1_demo, "test_10000": top1_all, "test_10000_torch": torch_top1},
        "openvino": ov.get_version(),
    }
    with open(os.path.join(a.out, "demo_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"params": n_params, "fp32_top1": meta["fp32_top1"]}))


if __name__ == "__main__":
    main()
