#!/usr/bin/env python3
"""Same-run PyTorch CPU reference for `deno task bench` (Debian: apt-get install python3-torch).

Usage: torch_ref.py matmul M K N [M K N ...]   -> {"matmul": [{"shape":[M,K,N],"gflops":..}]}
       torch_ref.py forward MODEL_DIR B T        -> {"forward_tokens_per_s": ..}
Prints one JSON object. Uses all CPU threads torch sees (as a user would).
"""
import json, os, struct, sys, time
import torch

def timeit(fn, min_time=1.0):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn(); n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 3:
            return dt / n

def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32", "reference loader reads F32 checkpoints only"
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info["shape"])
    return out

def llama_forward(cfg, W, ids, lora=None, scale=1.0):
    B, T = ids.shape
    d, H, HK = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    D = d // H
    eps = cfg["rms_norm_eps"]
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin
    def proj(x, name):
        y = x @ W[name].T
        if lora is not None and name in lora:
            a, b = lora[name]
            y = y + scale * ((x @ a.T) @ b.T)
        return y
    h = W["model.embed_tokens.weight"][ids]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms(h, W[p + "input_layernorm.weight"])
        q = proj(x, p + "self_attn.q_proj.weight").view(B, T, H, D).transpose(1, 2)
        k = proj(x, p + "self_attn.k_proj.weight").view(B, T, HK, D).transpose(1, 2)
        v = proj(x, p + "self_attn.v_proj.weight").view(B, T, HK, D).transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // HK, 1), v.repeat_interleave(H // HK, 1)
        a = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5 + mask, -1) @ v
        h = h + proj(a.transpose(1, 2).reshape(B, T, d), p + "self_attn.o_proj.weight")
        x = rms(h, W[p + "post_attention_layernorm.weight"])
        g = proj(x, p + "mlp.gate_proj.weight")
        u = proj(x, p + "mlp.up_proj.weight")
        h = h + proj(torch.nn.functional.silu(g) * u, p + "mlp.down_proj.weight")
    h = rms(h, W["model.norm.weight"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return h @ head.T

def main():
    # Use every core (this interpreter's OpenMP default can be 1 under a CPU quota).
    torch.set_num_threads(os.cpu_count() or 1)
    mode = sys.argv[1]
    res = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.no_grad():
        if mode == "matmul":
            vals = list(map(int, sys.argv[2:]))
            res["matmul"] = []
            for i in range(0, len(vals), 3):
                M, K, N = vals[i : i + 3]
                a, w = torch.randn(M, K), torch.randn(N, K)
                dt = timeit(lambda: a @ w.T)
                entry = {"shape": [M, K, N], "gflops": 2 * M * K * N / dt / 1e9}
                try:  # numpy/OpenBLAS as a second, usually faster, CPU reference
                    import numpy as np
                    an, wn = a.numpy(), w.numpy()
                    entry["numpy_gflops"] = 2 * M * K * N / timeit(lambda: an @ wn.T) / 1e9
                except ImportError:
                    pass
                res["matmul"].append(entry)
        elif mode == "forward":
            d, B, T = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
            cfg = json.load(open(f"{d}/config.json"))
            W = load_safetensors(f"{d}/model.safetensors")
            ids = torch.randint(0, cfg["vocab_size"], (B, T))
            dt = timeit(lambda: llama_forward(cfg, W, ids))
            res["forward_tokens_per_s"] = B * T / dt
    if mode == "train":  # (outside no_grad)
        d, B, T, kind = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        cfg = json.load(open(f"{d}/config.json"))
        W = load_safetensors(f"{d}/model.safetensors")
        ids = torch.randint(0, cfg["vocab_size"], (B, T + 1))
        x, y = ids[:, :-1], ids[:, 1:]
        lora, params = None, []
        if kind == "lora":
            r = 8
            lora = {}
            for n, w in W.items():
                if w.dim() == 2 and "embed" not in n:
                    a = (torch.rand(r, w.shape[1]) * 2 - 1) / w.shape[1] ** 0.5
                    b = torch.zeros(w.shape[0], r)
                    lora[n] = (a.requires_grad_(), b.requires_grad_())
                    params += [a, b]
        else:
            for w in W.values():
                w.requires_grad_()
                params.append(w)
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        def step():
            logits = llama_forward(cfg, W, x, lora, 2.0)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = timeit(step)
        res["train_tokens_per_s"] = B * T / dt
    print(json.dumps(res))

main()
