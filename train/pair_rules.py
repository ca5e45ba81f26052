"""Preference-pair rules for long-output DPO (pure; the pairs job samples and scores around them).

The paper's DPO data: several answers sampled per long-writing instruction from the SFT model,
each scored on quality (the judge's S_q) and on length adherence (S_l against the required
length); the best becomes `chosen`, another clearly worse one `rejected`. Here:

    combined = w_q * S_q + w_l * S_l          (both 0-100; weights from the config)
    chosen   = the highest combined score (ties: the earliest sample)
    rejected = a seeded random pick among the samples at least `margin` below chosen

A group that cannot give a pair is dropped with its reason (datatrove style: `(pair, reason)`).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from dataset_builder.core.config import field


@dataclass
class PairRules:
    quality_weight: float = field(0.5, help="w_q: weight of the judge's S_q (0-100) in the "
                                  "combined score.")
    length_weight: float = field(0.5, help="w_l: weight of S_l (0-100, length adherence "
                                 "against the required length) in the combined score.")
    margin: float = field(10.0, help="A rejected answer scores at least this much below the "
                          "chosen one (combined, 0-100 scale); closer answers say too little "
                          "about which is better to train on.")
    min_valid: int = field(2, help="Fewest scored answers a group needs (a failed generation "
                           "or judgement leaves an answer unscored).")
    seed: int = field(42, help="Seed of the rejected pick (with the instruction id, so a "
                      "group's pair does not depend on processing order).")


def combined(answer: dict, rules: PairRules) -> float | None:
    """The answer's combined score, None when either part is missing (failed judge or empty)."""
    if answer.get("s_q") is None or answer.get("s_l") is None:
        return None
    return rules.quality_weight * answer["s_q"] + rules.length_weight * answer["s_l"]


def _rng(rules: PairRules, group_id: str) -> random.Random:
    h = hashlib.sha256(f"{rules.seed}:{group_id}".encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def make_pair(group_id: str, answers: list[dict], rules: PairRules
              ) -> tuple[tuple[dict, dict] | None, str]:
    """((chosen, rejected), "") or (None, "category: detail") for one instruction's answers.
    Each answer carries at least `s_q` and `s_l` (None when unscored); the returned answers
    gain `score`."""
    scored = [{**a, "score": combined(a, rules)} for a in answers]
    valid = [a for a in scored if a["score"] is not None]
    if len(valid) < max(2, rules.min_valid):
        return None, f"too_few_valid: {len(valid)} of {len(answers)} answers scored"
    best = max(valid, key=lambda a: a["score"])      # max keeps the first of equal scores
    lower = [a for a in valid if best["score"] - a["score"] >= rules.margin]
    if not lower:
        second = max(a["score"] for a in valid if a is not best)
        return None, (f"no_margin: best {best['score']:.1f}, next {second:.1f}, "
                      f"margin {rules.margin:g}")
    return (best, _rng(rules, group_id).choice(lower)), ""
