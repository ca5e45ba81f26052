"""DPO pair rules: combined score, margin, ties, seeded choice, drops with reasons."""
from train.pair_rules import PairRules, combined, make_pair


def a(i, s_q, s_l):
    return {"i": i, "s_q": s_q, "s_l": s_l}


def test_combined_weights_and_missing_parts():
    r = PairRules(quality_weight=0.25, length_weight=0.75)
    assert combined(a(0, 80, 40), r) == 50.0
    assert combined(a(0, None, 40), r) is None and combined(a(0, 80, None), r) is None


def test_best_is_chosen_and_rejected_is_below_the_margin():
    r = PairRules(margin=10)
    pair, why = make_pair("g", [a(0, 60, 60), a(1, 90, 90), a(2, 85, 85), a(3, 20, 30)], r)
    assert why == "" and pair[0]["i"] == 1
    assert pair[1]["i"] in (0, 3)            # 85 is within the margin of 90: never rejected
    assert pair[0]["score"] - pair[1]["score"] >= 10


def test_seeded_choice_is_stable_and_depends_on_seed_and_group():
    answers = [a(0, 100, 100)] + [a(i, 10 * i, 10 * i) for i in range(1, 8)]
    picks = {make_pair("g", answers, PairRules())[0][1]["i"] for _ in range(5)}
    assert len(picks) == 1                   # same seed, same group: same rejected
    seen = {make_pair(f"g{k}", answers, PairRules(seed=s))[0][1]["i"]
            for k in range(10) for s in range(3)}
    assert len(seen) > 2                     # varies across groups and seeds


def test_ties_keep_the_first_and_drops_have_reasons():
    pair, _ = make_pair("g", [a(0, 90, 90), a(1, 90, 90), a(2, 10, 10)], PairRules())
    assert pair[0]["i"] == 0 and pair[1]["i"] == 2
    none, why = make_pair("g", [a(0, 90, 90), a(1, None, 50), a(2, 80, None)], PairRules())
    assert none is None and why == "too_few_valid: 1 of 3 answers scored"
    none, why = make_pair("g", [a(0, 90, 90), a(1, 85, 86)], PairRules(margin=10))
    assert none is None and why.startswith("no_margin: best 90.0, next 85.5")
    none, why = make_pair("g", [a(0, 90, 90), a(1, 90, 90)], PairRules(margin=0.5))
    assert none is None and why.startswith("no_margin")      # identical scores never pair
    assert make_pair("g", [], PairRules())[1].startswith("too_few_valid: 0 of 0")


def test_pair_rows_records_and_drops(tmp_path):
    import json

    from dataset_builder.core.config import load_config
    from train.pairs import PairsConfig, _instructions, pair_rows

    bench = json.loads(open("eval/data/longbench_write/longbench_write.jsonl").readline())
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join([
        json.dumps({"prompt": "Write a 3,000-word story about a lock keeper."}),
        json.dumps({"prompt": bench["prompt"]}),          # a benchmark prompt: refused
        json.dumps({"prompt": "Write about owls."}),       # no length stated or given
        "{not json",
        json.dumps({"prompt": "Write a 2,000-word guide to sharpening chisels."})]) + "\n")
    cfg = load_config(PairsConfig, None, ["model=m", f"data={data}", "output=o",
                                          "rules.margin=5"])
    insts, rejects = _instructions(cfg)
    assert [r["line"] for r in insts] == [1, 5]
    why = {r["line"]: r["reason"].split(":")[0] for r in rejects}
    assert why == {2: "in_benchmark", 3: "required_words_unknown", 4: "malformed_json"}
    assert all(r["file"] == str(data) for r in rejects)

    def ans(gid, k, s_q, s_l, text="text"):
        return {"id": f"{gid}-s{k}", "group": gid, "response": text, "s_q": s_q, "s_l": s_l,
                "output_length": 10 * k}
    a, b = insts[0]["id"], insts[1]["id"]
    groups = {a: [ans(a, 0, 80, 90), ans(a, 1, 40, 30), ans(a, 2, 82, 88, text="")],
              b: [ans(b, 0, 50, 50), ans(b, 1, 52, 51)]}
    pairs, drops = pair_rows(groups, {r["id"]: r for r in insts}, cfg)
    assert len(pairs) == 1 and pairs[0]["id"] == a
    p = pairs[0]
    assert p["chosen"][0]["content"] == "text" and p["chosen_words"] == 0   # the empty one is out
    assert p["rejected_words"] == 10 and p["chosen_score"] - p["rejected_score"] >= 5
    assert p["prompt"] == [{"role": "user", "content": insts[0]["prompt"]}]
    assert [(d["id"], d["line"], d["reason"].split(":")[0]) for d in drops] == \
        [(b, 5, "no_margin")]


def test_distributions_keep_fractions_and_integer_edges():
    """One describe() for curation's and the pairs' reports: scores keep their fractions
    (min/max were once cut to ints), word counts stay ints, nulls are left out."""
    from dataset_builder.curate.report import describe
    s = describe([87.5, 92.25, None, 99.75])
    assert s["count"] == 3 and (s["min"], s["max"]) == (87.5, 99.8) and s["median"] == 92.2
    w = describe([3000, 2048, 4100])
    assert (w["min"], w["max"]) == (2048, 4100) and isinstance(w["min"], int)
    assert describe([]) == {"count": 0} and describe([None]) == {"count": 0}
