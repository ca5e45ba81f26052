"""The length sweep's measures on hand-made samples: repetition, the share that ends on its own,
medians on 2,000+ word requests, the figure's curve from the ruler prompts, the 2x-cap target."""
from eval.length_sweep import arm_metrics, distinct_4gram


def test_distinct_4grams_tell_prose_from_a_loop():
    prose = " ".join(f"word{i}" for i in range(600))
    loop = " ".join(["the tomato grows in the sun"] * 100)
    assert distinct_4gram(prose) == 1.0
    assert distinct_4gram(loop) < 0.02
    assert distinct_4gram("too short") is None
    # only the first 500 words count: a loop after them does not lower the score
    assert distinct_4gram(prose + " " + loop) == 1.0


def _s(kind, required, words, reason="stop", ok=True):
    return {"id": f"{kind}-{required}-{words}", "kind": kind, "required_length": required,
            "ok": ok, "words": words if ok else 0, "finish_reason": reason if ok else "error",
            "distinct_4gram": 0.9 if ok else None}


def test_arm_metrics():
    samples = [_s("lbw", 2000, 400), _s("lbw", 3000, 600), _s("lbw", 5000, 4000, "length"),
               _s("lbw", 1000, 300), _s("ruler", 100, 120), _s("ruler", 100, 140),
               _s("ruler", 1000, 500), _s("ruler", 1000, 700, ok=False)]
    m = arm_metrics(samples, 250, {"steps": 12, "train_tokens": 900, "eot_loss_final": 0.5})
    assert m["n"] == 8 and m["failed"] == 1 and m["n_2k_plus"] == 3
    assert m["median_words_2k_plus"] == 600
    lo, hi = m["median_words_2k_plus_ci95"]
    assert 400 <= lo <= 600 <= hi <= 4000
    assert m["eos_share"] == round(6 / 7, 3)            # of the outputs that exist
    assert m["by_required"] == {"100": 130.0, "1000": 500.0}   # the ruler's curve
    far = m["at_2x_cap"]                                 # requests of 500+ words
    assert far["n"] == 5 and far["median_words"] == 500 and far["median_over_cap"] == 2.0
    assert m["steps"] == 12 and m["train_tokens"] == 900 and m["eot_loss_final"] == 0.5
    assert "at_2x_cap" not in arm_metrics(samples, None)


def test_train_summary_takes_the_last_epochs_means():
    from ray_jobs.length_sweep import train_summary
    history = [{"loss": 4.0, "eot_loss": 9.0}] * 3 + [
        {"loss": 1.0, "eot_loss": 0.5}, {"loss": 2.0, "eot_loss": None}, {"loss": 3.0,
                                                                         "eot_loss": 1.5}]
    manifest = {"final_metrics": {"steps": 6, "target_tokens": 700, "first_loss": 4.0},
                "data": {"rows_kept": 3}}
    s = train_summary(manifest, history, [40, 120, 90])
    assert s["rows"] == 3 and s["steps"] == 6 and s["train_tokens"] == 700
    assert s["loss_final"] == 2.0 and s["eot_loss_final"] == 1.0   # the last 3 steps
    assert s["answer_words_max"] == 120 and len(s["history"]) == 6
    assert s["history"][4] == [2.0, None]
