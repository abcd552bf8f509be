"""False-positive and false-negative rates of the prompt policy on the fixture prompt sets.

    .venv/bin/python bench/safety_rates.py [--policy FILE] [--misses]

Development sets (tests/fixtures/safety/benign.txt, adversarial.jsonl) were used while writing the
policy. Held-out round 1 (benign_holdout.txt, adversarial_holdout.jsonl) was committed before it was
first measured (FP 5.0%, FN 31.7% on the first policy); its misses then drove a second policy round,
so it is no longer held out. Held-out round 2 (benign_holdout2.txt, adversarial_holdout2.jsonl) was
committed before that round and first measured after it: that row is the honest estimate.
FN counts an adversarial prompt that was allowed; "wrong category" counts one rejected under another
category than labelled (still blocked, so not a miss).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.safety import check_prompt, get_policy  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "safety"


def read_benign(name: str) -> list[str]:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def read_adversarial(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="policy file (default: $SPACETIME_POLICY_FILE or the shipped one)")
    parser.add_argument("--misses", action="store_true", help="list every false positive and false negative")
    args = parser.parse_args()
    policy = get_policy(args.policy)

    rows = []
    misses: list[str] = []
    started, checked = time.perf_counter(), 0
    for label, benign_file, adversarial_file in (
        ("development", "benign.txt", "adversarial.jsonl"),
        ("round 1 (tuned on)", "benign_holdout.txt", "adversarial_holdout.jsonl"),
        ("held-out round 2", "benign_holdout2.txt", "adversarial_holdout2.jsonl"),
    ):
        benign = read_benign(benign_file)
        fp = [p for p in benign if not check_prompt(p, policy).allowed]
        adversarial = read_adversarial(adversarial_file)
        fn, wrong = [], 0
        for item in adversarial:
            decision = check_prompt(item["prompt"], policy)
            if decision.allowed:
                fn.append(item)
            elif decision.category != item["category"]:
                wrong += 1
        checked += len(benign) + len(adversarial)
        rows.append((label, len(benign), len(fp), len(adversarial), len(fn), wrong))
        misses += [f"FP  {label:<18} {p}" for p in fp]
        misses += [f"FN  {label:<18} [{i['category']}/{i.get('trick', '-')}] {i['prompt']}" for i in fn]

    print(f"policy: {policy.source}\n")
    print(f"| set | benign | FP | FP rate | adversarial | FN | FN rate | wrong category |")
    print(f"|---|---|---|---|---|---|---|---|")
    for label, nb, nfp, na, nfn, wrong in rows:
        print(f"| {label} | {nb} | {nfp} | {nfp / nb:.1%} | {na} | {nfn} | {nfn / na:.1%} | {wrong} |")

    # per category and per trick, development adversarial set
    by: dict[str, dict[str, list[int]]] = {"category": defaultdict(lambda: [0, 0]), "trick": defaultdict(lambda: [0, 0])}
    for set_name in ("adversarial.jsonl", "adversarial_holdout.jsonl", "adversarial_holdout2.jsonl"):
        for item in read_adversarial(set_name):
            caught = not check_prompt(item["prompt"], policy).allowed
            by["category"][item["category"]][0] += 1
            by["category"][item["category"]][1] += caught
            if "trick" in item:
                by["trick"][item["trick"]][0] += 1
                by["trick"][item["trick"]][1] += caught
    for key, title in (("category", "category (all adversarial sets)"), ("trick", "evasion trick (development set)")):
        print(f"\n| {title} | prompts | caught | FN rate |\n|---|---|---|---|")
        for name, (total, caught) in sorted(by[key].items()):
            print(f"| {name} | {total} | {caught} | {(total - caught) / total:.1%} |")

    elapsed = time.perf_counter() - started
    print(f"\n{checked} prompts checked in {elapsed * 1000:.0f} ms ({elapsed / checked * 1e6:.0f} us per prompt)")
    if args.misses:
        print("\n" + "\n".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
