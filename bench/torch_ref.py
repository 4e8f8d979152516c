#!/usr/bin/env python3
"""Same-run PyTorch reference for `deno task bench`.

  torch_ref.py info                             torch version, device, BLAS in use, whether transformers+peft import
  torch_ref.py matmul M K N [M K N ...]         fp32 matmul GFLOP/s (and numpy's on CPU)
  torch_ref.py forward DIR B T                  forward to logits, tokens/s
  torch_ref.py train DIR B T lora|full R        one training step (LoRA rank R, alpha 2R, all projections; AdamW)
  torch_ref.py gen DIR B N                      greedy generation of N new tokens at batch B, tokens/s

DIR is a Hugging Face model folder (config.json, model.safetensors or an index with shards; F32/BF16/F16).
With transformers and peft importable, those run it (on CUDA when there is a GPU) — what a user would pick;
otherwise a plain-PyTorch Qwen2/Llama (this file) runs on the CPU in fp32. Each call prints one JSON object
naming the implementation, the device and the BLAS library actually loaded (read from /proc/self/maps, since
Debian's torch uses whatever libblas.so.3 the alternatives system points at: the reference BLAS runs at a
few GFLOP/s, OpenBLAS (libopenblas0-pthread) at 50-300 on two cores).
"""
import json, os, struct, sys, time
import numpy as np
import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"
MODS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def timeit(fn, min_time=1.0, min_runs=3):
    fn()  # warm-up
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn(); n += 1
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= min_runs:
            return dt / n


def blas():
    """The BLAS library this process has loaded, by its file name."""
    a = torch.randn(64, 64); a @ a  # make sure it is loaded
    np.ones((8, 8)) @ np.ones((8, 8))
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if any(k in p.lower() for k in ("blas", "mkl", "blis")):
                libs.add(p)
    if any("openblas" in p for p in libs):
        kind = "OpenBLAS"
    elif any("mkl" in p for p in libs):
        kind = "MKL"
    elif any("blis" in p for p in libs):
        kind = "BLIS"
    elif any("/blas/libblas" in p for p in libs):
        kind = "reference BLAS (netlib libblas; not a baseline: install libopenblas0-pthread)"
    else:
        kind = "built into torch" if not libs else "unknown"
    return {"blas": kind, "blas_libs": sorted(libs)}


def hf_available(need_peft=False):
    try:
        import transformers  # noqa: F401
        if need_peft:
            import peft  # noqa: F401
        return True
    except ImportError:
        return False


# ---- plain PyTorch Qwen2 / Llama (fp32) ------------------------------------------------------------

def read_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = np.frombuffer(data, dtype=np.uint8, count=e - b, offset=b)
        dt = info["dtype"]
        if dt == "F32":
            x = raw.view(np.float32)
        elif dt == "F16":
            x = raw.view(np.float16).astype(np.float32)
        elif dt == "BF16":
            x = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {dt} is not read by the reference")
        out[name] = torch.from_numpy(x.copy()).reshape(info["shape"])
    return out


def load_plain(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    W = {}
    for f in files:
        W.update(read_safetensors(os.path.join(d, f)))
    return cfg, W


def rope_tables(cfg, positions, D):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    ang = positions.float()[:, None] * inv[None, :]
    return torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)


def plain_forward(cfg, W, ids, lora=None, scale=1.0, cache=None, past=0):
    """Logits [B, T, V]. cache: per-layer [K, V] lists for generation (grown in place)."""
    B, T = ids.shape
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    HK = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim", d // H)
    eps = cfg["rms_norm_eps"]
    cos, sin = rope_tables(cfg, torch.arange(past, past + T), D)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def proj(x, name):
        y = x @ W[name + ".weight"].T
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        if lora is not None and name in lora:
            a, b = lora[name]
            y = y + scale * ((x @ a.T) @ b.T)
        return y

    h = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms(h, W[p + "input_layernorm.weight"])
        q = rope(proj(x, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2))
        k = rope(proj(x, p + "self_attn.k_proj").view(B, T, HK, D).transpose(1, 2))
        v = proj(x, p + "self_attn.v_proj").view(B, T, HK, D).transpose(1, 2)
        if cache is not None:
            if len(cache) <= l:
                cache.append([k, v])
            else:
                cache[l] = [torch.cat([cache[l][0], k], 2), torch.cat([cache[l][1], v], 2)]
            k, v = cache[l]
        k, v = k.repeat_interleave(H // HK, 1), v.repeat_interleave(H // HK, 1)
        a = attend(q, k, v, past)
        h = h + proj(a.transpose(1, 2).reshape(B, T, H * D), p + "self_attn.o_proj")
        x = rms(h, W[p + "post_attention_layernorm.weight"])
        g, u = proj(x, p + "mlp.gate_proj"), proj(x, p + "mlp.up_proj")
        h = h + proj(torch.nn.functional.silu(g) * u, p + "mlp.down_proj")
    h = rms(h, W["model.norm.weight"])
    return h @ W.get("lm_head.weight", W["model.embed_tokens.weight"]).T


def attend(q, k, v, past):
    """Causal attention of T queries at positions past.. over past + T keys."""
    T, S = q.shape[2], k.shape[2]
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is not None and past == 0:
        return sdpa(q, k, v, is_causal=T > 1)
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if T > 1:
        s = s + torch.full((T, S), float("-inf")).triu(past + 1)
    return torch.softmax(s, -1) @ v


# ---- transformers + PEFT ----------------------------------------------------------------------------

def load_hf(d):
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as the engine computes
    try:
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    return m.to(DEV)


def vocab(d):
    return json.load(open(os.path.join(d, "config.json")))["vocab_size"]


def forward(d, B, T):
    ids = torch.randint(0, vocab(d), (B, T), device=DEV)
    with torch.no_grad():
        if hf_available():
            m = load_hf(d).eval()
            dt = timeit(lambda: m(ids).logits)
            return {"impl": "transformers", "forward_tokens_per_s": B * T / dt}
        cfg, W = load_plain(d)
        dt = timeit(lambda: plain_forward(cfg, W, ids))
        return {"impl": "plain torch", "forward_tokens_per_s": B * T / dt}


def train(d, B, T, kind, r):
    ids = torch.randint(0, vocab(d), (B, T + 1), device=DEV)
    x, y = ids[:, :-1], ids[:, 1:]
    if hf_available(need_peft=(kind == "lora")):
        m = load_hf(d)
        m.config.use_cache = False
        if kind == "lora":
            from peft import LoraConfig, get_peft_model
            m = get_peft_model(m, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=MODS,
                                             task_type="CAUSAL_LM"))
        params = [p for p in m.parameters() if p.requires_grad]
        impl = "transformers + peft" if kind == "lora" else "transformers"

        def loss_fn():
            logits = m(input_ids=x).logits
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    else:
        cfg, W = load_plain(d)
        lora, params = None, []
        if kind == "lora":
            lora = {}
            for n, w in W.items():
                if n.endswith(".weight") and w.dim() == 2 and any(f".{mod}." in n for mod in MODS):
                    a = ((torch.rand(r, w.shape[1]) * 2 - 1) / w.shape[1] ** 0.5).requires_grad_()
                    b = torch.zeros(w.shape[0], r).requires_grad_()
                    lora[n[: -len(".weight")]] = (a, b)
                    params += [a, b]
        else:
            for w in W.values():
                w.requires_grad_()
                params.append(w)
        impl = "plain torch"

        def loss_fn():
            logits = plain_forward(cfg, W, x, lora, 2.0)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dt = timeit(step)
    res = {"impl": impl, "train_tokens_per_s": B * T / dt}
    if DEV == "cuda":
        res["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return res


def gen(d, B, N):
    ids = torch.randint(0, min(vocab(d), 30000), (B, 16), device=DEV)
    with torch.no_grad():
        if hf_available():
            m = load_hf(d).eval()
            kw = dict(max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=0)
            dt = timeit(lambda: m.generate(ids, attention_mask=torch.ones_like(ids), **kw), min_time=0.5, min_runs=2)
            return {"impl": "transformers", "gen_tokens_per_s": B * N / dt}
        cfg, W = load_plain(d)

        def run():
            cache, past, cur = [], 0, ids
            for _ in range(N):
                logits = plain_forward(cfg, W, cur, cache=cache, past=past)
                past += cur.shape[1]
                cur = logits[:, -1].argmax(-1, keepdim=True)
        dt = timeit(run, min_time=0.5, min_runs=2)
        return {"impl": "plain torch (KV cache, greedy)", "gen_tokens_per_s": B * N / dt}


def matmul(vals):
    out = []
    for i in range(0, len(vals), 3):
        M, K, N = vals[i: i + 3]
        a, w = torch.randn(M, K, device=DEV), torch.randn(N, K, device=DEV)
        torch.backends.cuda.matmul.allow_tf32 = False
        e = {"shape": [M, K, N], "gflops": 2 * M * K * N / timeit(lambda: a @ w.T, 0.5) / 1e9}
        if DEV == "cpu":
            an, wn = a.numpy(), w.numpy()
            e["numpy_gflops"] = 2 * M * K * N / timeit(lambda: an @ wn.T, 0.5) / 1e9
        out.append(e)
    return {"matmul": out}


def main():
    torch.set_num_threads(os.cpu_count() or 1)  # every core, as a user's torch would
    torch.manual_seed(0)
    mode, a = sys.argv[1], sys.argv[2:]
    res = {"torch": torch.__version__, "device": DEV, "threads": torch.get_num_threads(), **blas()}
    if DEV == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    if mode == "info":
        res["transformers_peft"] = hf_available(need_peft=True)
    elif mode == "matmul":
        res.update(matmul(list(map(int, a))))
    elif mode == "forward":
        res.update(forward(a[0], int(a[1]), int(a[2])))
    elif mode == "train":
        res.update(train(a[0], int(a[1]), int(a[2]), a[3], int(a[4]) if len(a) > 4 else 8))
    elif mode == "gen":
        res.update(gen(a[0], int(a[1]), int(a[2])))
    else:
        sys.exit(f"torch_ref.py: unknown mode '{mode}'")
    print(json.dumps(res))


main()
