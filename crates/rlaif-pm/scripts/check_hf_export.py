#!/usr/bin/env python3
"""Checks by hand that a preference-model directory written by rlaif-pm loads in Hugging Face
transformers as a sequence classifier and gives the scores rlaif gave.

    rlaif score --pm PM_DIR --input PAIRS.jsonl --out scores.jsonl
    python crates/rlaif-pm/scripts/check_hf_export.py PM_DIR PAIRS.jsonl scores.jsonl

PAIRS.jsonl: TRL `prompt` / `chosen` / `rejected` lines with string prompts (chat format),
or `prompt` / `response_a` / `response_b`; scores.jsonl: `rlaif score`'s output for it
(`score_a`, `score_b` per line, in order). Each sequence is built as rlaif-pm builds it:
the chat template rendered with the generation prompt, tokenized; then the rest of the
conversation with the response, cut after the end-of-turn token, tokenized; joined.
transformers reads the score at the last token that is not `pad_token_id`. Prints the
largest absolute difference and exits with 1 when it exceeds the tolerance (default 1e-3,
as the language model's export was checked). Needs torch and transformers.
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> int:
    pm_dir, pairs_path, scores_path = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
    tok = AutoTokenizer.from_pretrained(pm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(pm_dir, torch_dtype=torch.float32)
    model.eval()
    end = "<|im_end|>"
    pairs = [json.loads(l) for l in open(pairs_path) if l.strip()]
    scores = [json.loads(l) for l in open(scores_path) if l.strip()]
    assert len(pairs) == len(scores), (len(pairs), len(scores))

    def score(prompt: str, response: str) -> float:
        msgs = [{"role": "user", "content": prompt}]
        p = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(
            msgs + [{"role": "assistant", "content": response}], tokenize=False
        )
        assert full.startswith(p)
        rest = full[len(p):]
        rest = rest[: rest.rindex(end) + len(end)]
        ids = tok(p, add_special_tokens=False)["input_ids"] + tok(rest, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, 0].item()

    worst = 0.0
    for pair, s in zip(pairs, scores):
        a = pair.get("response_a", pair.get("chosen"))
        b = pair.get("response_b", pair.get("rejected"))
        for ours, resp in ((s["score_a"], a), (s["score_b"], b)):
            theirs = score(pair["prompt"], resp)
            worst = max(worst, abs(theirs - ours))
    print(f"{len(pairs)} pairs: largest |transformers − rlaif| = {worst:.2e} (tolerance {tol:g})")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
