#!/usr/bin/env python3
"""How far bf16 matmuls move SmolLM2-135M from its f32 self, in PyTorch, for the comparison
in docs/benchmarks.md with `MatmulPrecision::Bf16` (crates/rlaif-lm/tests/smollm2.rs,
`bf16_matmuls_stay_close_to_the_f32_model`, which runs the same text).

    python benches/reference/torch_bf16_deviation.py ~/.cache/rlaif/SmolLM2-135M-Instruct.Q4_1.gguf

Three runs of the next-token log-probs and their gradients: f32; `torch.autocast("cpu",
dtype=torch.bfloat16)`; and the rounding `MatmulPrecision::Bf16` does (every `nn.Linear`'s
input and weight rounded to bf16, products, sums and everything else f32). Prints the mean
and largest |Δ log p|, how often the greedy choice is the same, and the relative error of
four weights' gradients. Needs torch, transformers, gguf.
"""
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf = sys.argv[1]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
where, name = os.path.dirname(gguf), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(where, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
text = (
    "Constitutional AI trains a helpful assistant to be harmless without human "
    "labels of harm. The model critiques its own answers against written principles, "
    "revises them, and is fine-tuned on the revisions. A preference model trained on the "
    "model's own judgements of pairs of answers then serves as the reward for "
    "reinforcement learning, with a penalty that keeps the policy close to where it began."
)
ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
WEIGHTS = [
    "model.layers.29.mlp.down_proj.weight",
    "model.layers.15.self_attn.q_proj.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.embed_tokens.weight",
]


def run(autocast):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids).logits
    lp = torch.log_softmax(logits.float()[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    (-lp.mean()).backward()
    params = dict(model.named_parameters())
    return lp.detach(), {w: params[w].grad.clone() for w in WEIGHTS}, logits.argmax(-1)[0]


def report(label, base, other):
    (lp0, g0, t0), (lp1, g1, t1) = base, other
    d = (lp0 - lp1).abs()
    print(f"{label}: {ids.shape[1]} tokens, mean |d log p| {d.mean():.4f} (mean |log p| "
          f"{lp0.abs().mean():.3f}), max {d.max():.3f}, greedy choice the same at "
          f"{(t0 == t1).sum().item()}/{len(t0)}")
    for w in WEIGHTS:
        print(f"  {w}: gradient relative error {((g0[w] - g1[w]).norm() / g0[w].norm()):.4f}")


f32 = run(False)
report("torch.autocast bf16", f32, run(True))

linear = F.linear


def rounded_linear(module):
    def forward(x):
        y = linear(x.bfloat16().float(), module.weight.bfloat16().float())
        return y if module.bias is None else y + module.bias
    return forward


for module in model.modules():
    if isinstance(module, torch.nn.Linear):
        module.forward = rounded_linear(module)
report("inputs of every linear rounded to bf16, f32 otherwise", f32, run(False))
