"""DistilBERT training throughput and MFU on one GPU (bf16 autocast, fixed sequence length).

Standalone: needs only torch + transformers (no steam_ray, no HF hub: the model is built from
a default ``DistilBertConfig()``, randomly initialised; throughput does not depend on weights).

    python benchmarks/bench_gpu_mfu.py                      # batch 64, seq 128, 50 steps
    python benchmarks/bench_gpu_mfu.py --batch-size 128 --compile
    python benchmarks/bench_gpu_mfu.py --device cpu --steps 2   # smoke check, no GPU

FLOPs per training step ~= 6 * N * tokens (forward 2x + backward 4x the matmul FLOPs)
plus attention scores/values: 12 * layers * seq^2 * hidden per sequence (fwd+bwd).
N counts the NON-embedding parameters: the token/position embeddings are a gather, not a
matmul, and a classifier has no tied output projection, so counting them would inflate MFU by
~50% for DistilBERT. ``mfu_all_params`` (the looser convention) is printed beside it.
MFU = achieved FLOP/s / the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key in name:
            return name, peak
    return name, None


def flops_per_step(params: int, layers: int, hidden: int, batch: int, seq: int) -> float:
    dense = 6.0 * params * batch * seq
    attention = 12.0 * layers * seq * seq * hidden * batch
    return dense + attention


def main() -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    ap = argparse.ArgumentParser(description="DistilBERT bf16 training throughput / MFU")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    ap.add_argument(
        "--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)"
    )
    ap.add_argument(
        "--no-mask", action="store_true", help="diagnostic: no attention_mask (flash SDPA path)"
    )
    ap.add_argument("--no-dropout", action="store_true", help="diagnostic: dropout off")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = DistilBertConfig(num_labels=2)
    if args.no_dropout:
        cfg.dropout = cfg.attention_dropout = cfg.seq_classif_dropout = 0.0
    model = DistilBertForSequenceClassification(cfg).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    embed = model.distilbert.embeddings
    embed_params = sum(p.numel() for p in embed.parameters() if p.dim() == 2)
    matmul_params = params - embed_params
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, fused=device.type == "cuda")
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    use_amp = not args.no_amp and (device.type != "cuda" or torch.cuda.is_bf16_supported())

    ids = torch.randint(1000, cfg.vocab_size, (args.batch_size, args.seq_len), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = step_model(input_ids=ids, attention_mask=None if args.no_mask else mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    warmup = min(args.warmup, max(1, args.steps // 2)) if device.type == "cpu" else args.warmup
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    elapsed = time.perf_counter() - start

    name, peak = peak_tflops(device)
    samples_per_s = args.batch_size * args.steps / elapsed
    flops = flops_per_step(matmul_params, cfg.n_layers, cfg.dim, args.batch_size, args.seq_len)
    tflops = flops * args.steps / elapsed / 1e12
    flops_all = flops_per_step(params, cfg.n_layers, cfg.dim, args.batch_size, args.seq_len)
    tflops_all = flops_all * args.steps / elapsed / 1e12
    result = {
        "device": name,
        "params": params,
        "non_embedding_params": matmul_params,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "attention_mask": not args.no_mask,
        "dropout": not args.no_dropout,
        "dtype": "bf16-autocast" if use_amp else "fp32",
        "samples_per_s": round(samples_per_s, 1),
        "tokens_per_s": round(samples_per_s * args.seq_len, 1),
        "achieved_tflops": round(tflops, 2),
        "peak_tflops": peak,
        "mfu": round(tflops / peak, 4) if peak else None,
        "mfu_all_params": round(tflops_all / peak, 4) if peak else None,
        "max_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
