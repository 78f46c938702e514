#!/usr/bin/env python3
"""Check and summarise data/pairs/known_preference.jsonl.

The file is a hand-written, held-out set of response pairs with a known preference
(see README.md next to this script). This script checks the rules the file must keep
and prints the counts quoted in the README. It uses only the Python standard library.

Usage (from the repository root or anywhere):

    python3 data/pairs/check_known_preference.py            # check + plain summary
    python3 data/pairs/check_known_preference.py --markdown # check + README tables
    python3 data/pairs/check_known_preference.py FILE       # another file

Exit status: 0 when every check passes, 1 otherwise (each problem is printed with its
line number).

Checks:
  * the file is UTF-8, one JSON object per line, newline-terminated, no blank lines,
    no trailing spaces or tabs;
  * each object has exactly the fields id, prompt, chosen, rejected, category, length,
    kind, all non-empty strings with no spaces at their ends or before a line break;
  * ids are kp-001, kp-002, ... in order, with no gaps or duplicates;
  * category, kind and length take one of the allowed values, and
    category == "benign-helpful" exactly when kind == "helpful_vs_unhelpful";
  * the length tag is true of the word counts (words = whitespace-separated tokens):
      similar          the longer side has at most 1.2 x the words of the shorter,
      chosen_longer    chosen has at least 2 x the words of rejected,
      rejected_longer  rejected has at least 2 x the words of chosen;
  * no prompt is repeated, and no prompt copies (or nearly copies) a training prompt
    in data/prompts/*.jsonl: exact match after normalising case, punctuation and
    spacing, or a word-set Jaccard similarity of 0.6 or more.
"""

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "known_preference.jsonl"
TRAINING_PROMPTS = sorted((HERE.parent / "prompts").glob("*.jsonl"))

FIELDS = ["id", "prompt", "chosen", "rejected", "category", "length", "kind"]
CATEGORIES = [
    "weapons", "drugs", "hacking", "violence", "self-harm", "fraud", "privacy", "hate",
    "sexual-minors-refusal-only", "theft", "dangerous-chemistry", "extremism",
    "harassment", "benign-helpful",
]
LENGTHS = ["similar", "chosen_longer", "rejected_longer"]
KINDS = ["refusal_vs_harmful", "safe_help_vs_harmful", "helpful_vs_unhelpful"]
SIMILAR_MAX_RATIO = 1.2
LONGER_MIN_RATIO = 2.0
NEAR_COPY_JACCARD = 0.6


def words(text):
    return len(text.split())


def normalise(text):
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def jaccard(a, b):
    sa, sb = set(normalise(a).split()), set(normalise(b).split())
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def length_ok(tag, c, r):
    if tag == "similar":
        return max(c, r) <= SIMILAR_MAX_RATIO * min(c, r)
    if tag == "chosen_longer":
        return c >= LONGER_MIN_RATIO * r
    if tag == "rejected_longer":
        return r >= LONGER_MIN_RATIO * c
    return False


def load_training_prompts():
    prompts = []
    for path in TRAINING_PROMPTS:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    if isinstance(obj.get("prompt"), str):
                        prompts.append((path.name, obj.get("id", "?"), obj["prompt"]))
    return prompts


def check(path):
    errors = []
    rows = []
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [f"not UTF-8: {e}"], []
    if text.startswith("\ufeff"):
        errors.append("line 1: starts with a byte-order mark")
    if not text.endswith("\n"):
        errors.append("the file does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        where = f"line {n}"
        if not line.strip():
            errors.append(f"{where}: blank line")
            continue
        if line != line.rstrip(" \t\r"):
            errors.append(f"{where}: trailing whitespace")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: invalid JSON: {e}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        if sorted(obj) != sorted(FIELDS):
            errors.append(f"{where}: fields {sorted(obj)} != {sorted(FIELDS)}")
            continue
        bad = [k for k in FIELDS if not isinstance(obj[k], str) or not obj[k].strip()]
        if bad:
            errors.append(f"{where}: empty or non-string fields {bad}")
            continue
        untidy = [k for k in FIELDS if obj[k] != obj[k].strip() or re.search(r"[ \t]\n", obj[k])]
        if untidy:
            errors.append(f"{where}: spaces at the ends of a field or before a line break in {untidy}")
        want_id = f"kp-{len(rows) + 1:03d}"
        if obj["id"] != want_id:
            errors.append(f"{where}: id {obj['id']!r}, expected {want_id!r}")
        if obj["category"] not in CATEGORIES:
            errors.append(f"{where}: unknown category {obj['category']!r}")
        if obj["kind"] not in KINDS:
            errors.append(f"{where}: unknown kind {obj['kind']!r}")
        if obj["length"] not in LENGTHS:
            errors.append(f"{where}: unknown length {obj['length']!r}")
        if (obj["category"] == "benign-helpful") != (obj["kind"] == "helpful_vs_unhelpful"):
            errors.append(f"{where}: benign-helpful goes with helpful_vs_unhelpful and only with it")
        c, r = words(obj["chosen"]), words(obj["rejected"])
        if obj["length"] in LENGTHS and not length_ok(obj["length"], c, r):
            errors.append(f"{where} ({obj['id']}): length {obj['length']!r} is false "
                          f"(chosen {c} words, rejected {r})")
        if obj["chosen"].strip() == obj["rejected"].strip():
            errors.append(f"{where}: chosen and rejected are the same")
        rows.append(obj)

    seen = {}
    for obj in rows:
        key = normalise(obj["prompt"])
        if key in seen:
            errors.append(f"{obj['id']}: prompt repeats {seen[key]}")
        seen.setdefault(key, obj["id"])

    for fname, tid, tprompt in load_training_prompts():
        for obj in rows:
            if normalise(obj["prompt"]) == normalise(tprompt):
                errors.append(f"{obj['id']}: prompt copies {fname} {tid}")
            elif jaccard(obj["prompt"], tprompt) >= NEAR_COPY_JACCARD:
                errors.append(f"{obj['id']}: prompt nearly copies {fname} {tid} "
                              f"(Jaccard {jaccard(obj['prompt'], tprompt):.2f}): {tprompt!r}")
    return errors, rows


def summary(rows):
    s = {}
    s["total"] = len(rows)
    s["category"] = Counter(o["category"] for o in rows)
    s["length"] = Counter(o["length"] for o in rows)
    s["kind"] = Counter(o["kind"] for o in rows)
    s["kind_x_length"] = Counter((o["kind"], o["length"]) for o in rows)
    s["category_x_length"] = Counter((o["category"], o["length"]) for o in rows)
    med = {}
    for tag in LENGTHS:
        sub = [o for o in rows if o["length"] == tag]
        if sub:
            med[tag] = (len(sub),
                        statistics.median(words(o["chosen"]) for o in sub),
                        statistics.median(words(o["rejected"]) for o in sub))
    sub = rows
    med["all"] = (len(sub), statistics.median(words(o["chosen"]) for o in sub),
                  statistics.median(words(o["rejected"]) for o in sub))
    s["medians"] = med

    def starts_with_i(t):
        return re.match(r"I\b", t) is not None
    s["style"] = {
        "chosen starts with \"I\"": sum(starts_with_i(o["chosen"]) for o in rows),
        "rejected starts with \"I\"": sum(starts_with_i(o["rejected"]) for o in rows),
        "chosen has line breaks (lists, quoted text)": sum("\n" in o["chosen"] for o in rows),
        "rejected has line breaks (lists, quoted text)": sum("\n" in o["rejected"] for o in rows),
        "similar pairs where chosen has more words": sum(
            o["length"] == "similar" and words(o["chosen"]) > words(o["rejected"]) for o in rows),
        "similar pairs where rejected has more words": sum(
            o["length"] == "similar" and words(o["rejected"]) > words(o["chosen"]) for o in rows),
        "chosen is 10 words or fewer": sum(words(o["chosen"]) <= 10 for o in rows),
        "rejected is 10 words or fewer": sum(words(o["rejected"]) <= 10 for o in rows),
    }
    return s


def ordered(counter, order):
    return [(k, counter[k]) for k in order if counter[k]] + \
           [(k, v) for k, v in counter.items() if k not in order]


def print_plain(s):
    print(f"pairs: {s['total']}")
    for name, order in (("category", CATEGORIES), ("length", LENGTHS), ("kind", KINDS)):
        print(f"\nper {name}:")
        for k, v in ordered(s[name], order):
            print(f"  {k:28} {v}")
    print("\nkind x length:")
    print(f"  {'':22}" + "".join(f"{t:>17}" for t in LENGTHS))
    for k in KINDS:
        print(f"  {k:22}" + "".join(f"{s['kind_x_length'][(k, t)]:>17}" for t in LENGTHS))
    print("\ncategory x length:")
    for k, _ in ordered(s["category"], CATEGORIES):
        print(f"  {k:22}" + "".join(f"{s['category_x_length'][(k, t)]:>17}" for t in LENGTHS))
    print("\nmedian word counts (pairs, chosen, rejected):")
    for tag, (n, c, r) in s["medians"].items():
        print(f"  {tag:18} n={n:<4} chosen={c:<6} rejected={r}")
    print("\nstyle:")
    for k, v in s["style"].items():
        print(f"  {k:48} {v}")


def print_markdown(s):
    def table(title, counter, order):
        print(f"| {title} | pairs |\n|---|---:|")
        for k, v in ordered(counter, order):
            print(f"| `{k}` | {v} |")
        print(f"| total | {sum(counter.values())} |\n")
    table("category", s["category"], CATEGORIES)
    table("length", s["length"], LENGTHS)
    table("kind", s["kind"], KINDS)
    print("| kind \\ length | " + " | ".join(f"`{t}`" for t in LENGTHS) + " |")
    print("|---|" + "---:|" * len(LENGTHS))
    for k in KINDS:
        print(f"| `{k}` | " + " | ".join(str(s["kind_x_length"][(k, t)]) for t in LENGTHS) + " |")
    print("\n| category \\ length | " + " | ".join(f"`{t}`" for t in LENGTHS) + " |")
    print("|---|" + "---:|" * len(LENGTHS))
    for k, _ in ordered(s["category"], CATEGORIES):
        print(f"| `{k}` | " + " | ".join(str(s["category_x_length"][(k, t)]) for t in LENGTHS) + " |")
    print("\n| length | pairs | median words, chosen | median words, rejected |\n|---|---:|---:|---:|")
    for tag, (n, c, r) in s["medians"].items():
        name = f"`{tag}`" if tag != "all" else "all"
        print(f"| {name} | {n} | {c:g} | {r:g} |")
    print("\n| style | pairs |\n|---|---:|")
    for k, v in s["style"].items():
        print(f"| {k} | {v} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    ap.add_argument("--markdown", action="store_true", help="print the summary as Markdown tables")
    args = ap.parse_args()
    errors, rows = check(args.file)
    if rows:
        s = summary(rows)
        print_markdown(s) if args.markdown else print_plain(s)
    if errors:
        print(f"\n{len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print(f"\nOK: {args.file}: {len(rows)} pairs, every check passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
