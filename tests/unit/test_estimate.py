"""The generation dry run (dataset_builder/estimate.py): its token model against a hand count
made by rendering every request of each row with the job's own prompt builders, its selection
and resume counts, and the CLI (one JSON line last, nothing started, bad prices refused)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dataset_builder import estimate as E
from dataset_builder import prompts
from dataset_builder.core.config import ConfigError, load_config
from dataset_builder.generation import GenerateConfig

ROWS = [
    {"id": "a", "prompt": "Write a 1200-word essay on lighthouses and the people who kept them."},
    {"id": "b", "prompt": "Write a 3000-word story about a river town and its long floods."},
    {"id": "c", "prompt": "写一篇2000字的文章，介绍长江。"},          # zh: not generated
    {"id": "d", "prompt": "Write a 100-word note to a neighbour."},   # below the minimum
]


def _cfg(tmp_path, *extra: str) -> GenerateConfig:
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return load_config(GenerateConfig, None, [
        f"input={inp}", f"output={tmp_path}/out", "engine.backend=openai", "engine.model=m",
        "agentwrite.max_paragraphs=5", "agentwrite.min_paragraph_words=50",
        "agentwrite.max_step_tokens=384", "agentwrite.tokens_per_word=1.4",
        "selection.min_required_words=500", "selection.languages=[en]",
        "estimate.tokens_per_word={en: 1.0}", "estimate.paragraph_words=400", *extra])


def _words(messages: list[dict]) -> list[str]:
    return " ".join(f"{m['role']}: {m['content']}" for m in messages).split()


def _hand_count(prompt: str, required: int, p: int, step_words: int, cfg) -> dict:
    """Every request of one row rendered with the job's builders: main points of
    `main_point_words` placeholder words, paragraphs of `step_words` words; an API caches
    128-word steps of the prefix shared with the request before it, from 1,024 on."""
    aw, mp = cfg.agentwrite, cfg.estimate.main_point_words
    plan = [{"main_point": " ".join(["lorem"] * mp), "words": required // p}] * p
    plan_msgs = prompts.plan_messages(prompt, required, aw.min_paragraph_words,
                                      aw.max_paragraph_words)
    plan_text = prompts.format_plan(plan)
    reqs, texts = [_words(plan_msgs)], []
    for _ in range(p):
        reqs.append(_words(prompts.write_messages(prompt, plan, texts, aw.layout, plan_msgs,
                                                  plan_text)))
        texts.append(" ".join(["lorem"] * step_words))
    cached = 0
    for prev, cur in zip(reqs, reqs[1:]):
        n = next((i for i, (x, y) in enumerate(zip(prev, cur)) if x != y), min(len(prev),
                                                                            len(cur)))
        cached += n // 128 * 128 if n >= 1024 else 0
    return {"output": len((plan_text + "\n").split()) + p * step_words,
            "input": sum(map(len, reqs)), "cached": cached}


def test_paragraph_count_follows_the_configured_bounds(tmp_path):
    cfg = _cfg(tmp_path)
    assert E.paragraphs(1200, cfg.agentwrite, cfg.estimate) == 3     # 1200 / 400
    assert E.paragraphs(3000, cfg.agentwrite, cfg.estimate) == 5     # 7.5 -> max_paragraphs 5
    assert E.paragraphs(120, cfg.agentwrite, cfg.estimate) == 1      # one short paragraph
    cfg = _cfg(tmp_path, "agentwrite.max_paragraphs=50", "agentwrite.max_paragraph_words=500",
               "estimate.paragraph_words=2000")
    assert E.paragraphs(6000, cfg.agentwrite, cfg.estimate) == 12    # budgets <= 500 words


@pytest.mark.parametrize("layout", ["paper", "append"])
def test_estimate_matches_a_hand_count_of_every_request(tmp_path, layout):
    cfg = _cfg(tmp_path, f"agentwrite.layout={layout}")
    res = E.estimate(cfg, set(), set())
    assert (res["instructions_in"], res["selected"], res["to_generate"]) == (4, 2, 2)
    assert res["rejects_by_reason"] == {"selection: language_not_generated": 1,
                                        "selection: below_min_required_words": 1}
    assert res["paragraphs_assumed"] == {"3": 1, "5": 1}
    # a: 3 steps of 400 words, b: 5 of 600; at 1 token a word both are cut at 384 tokens
    a = _hand_count(ROWS[0]["prompt"], 1200, 3, 384, cfg)
    b = _hand_count(ROWS[1]["prompt"], 3000, 5, 384, cfg)
    assert res["output_tokens"] == a["output"] + b["output"]
    assert res["input_tokens"] == a["input"] + b["input"]
    assert res["input_tokens_cached"] == a["cached"] + b["cached"] > 0


def test_prices_and_gpu_hours_follow_the_token_counts(tmp_path):
    cfg = _cfg(tmp_path, "estimate.price_input_per_m=2.5", "estimate.price_output_per_m=10",
               "estimate.price_cached_input_per_m=1.25", "estimate.gpu_output_tokens_per_s=10")
    r = E.estimate(cfg, set(), set())
    i, c, o = r["input_tokens"], r["input_tokens_cached"], r["output_tokens"]
    assert r["usd_without_cache"] == round((i * 2.5 + o * 10) / 1e6, 2)
    assert r["usd_with_cache"] == round(((i - c) * 2.5 + c * 1.25 + o * 10) / 1e6, 2)
    assert r["gpu_hours"] == round(o / 10 / 3600, 3)


def test_rows_done_by_an_earlier_run_are_not_priced(tmp_path):
    cfg = _cfg(tmp_path)
    ids = {r["id"] for r in E._rows(cfg)[0] if r["prompt"] == ROWS[1]["prompt"]}
    res = E.estimate(cfg, ids, set())
    assert (res["already_done"], res["to_generate"]) == (1, 1)
    assert res["paragraphs_assumed"] == {"3": 1}


def test_the_linear_model_matches_full_renders_with_a_real_tokenizer(tiny_model):
    """With the model's tokenizer and chat template, the per-row shift of the placeholder
    renders agrees with rendering the row's own requests (the tokenizer may merge a few tokens
    differently at the seams)."""
    from transformers import AutoTokenizer
    cfg = load_config(GenerateConfig, None, ["input=x", "output=y", f"engine.model={tiny_model}",
                                             "agentwrite.max_paragraphs=4"])
    counter = E.Counter(AutoTokenizer.from_pretrained(tiny_model))
    s = E.shape(4, cfg.agentwrite, cfg.estimate, counter)
    prompt = ROWS[1]["prompt"]
    plan = [{"main_point": " ".join(["lorem"] * cfg.estimate.main_point_words), "words": 100}] * 4
    plan_msgs = prompts.plan_messages(prompt, 1000, cfg.agentwrite.min_paragraph_words,
                                      cfg.agentwrite.max_paragraph_words)
    texts, full = [], [len(counter.units(plan_msgs))]
    for _ in range(4):
        full.append(len(counter.units(prompts.write_messages(
            prompt, plan, texts, "paper", plan_msgs, prompts.format_plan(plan)))))
        texts.append(" ".join(["lorem"] * 50))
    d_i = counter.text(prompt) - counter.text(E.REF_A)
    x_u, o_u = counter.text(" ".join(["lorem"] * E.X_A)), counter.text(texts[0])
    model = [s.prompt[r] + d_i + s.texts[r] * (o_u - x_u) for r in range(5)]
    assert all(abs(m - f) <= 0.01 * f + 2 for m, f in zip(model, full)), (model, full)


def test_bad_prices_are_refused(tmp_path):
    for bad in ("estimate.price_output_per_m=0", "estimate.gpu_output_tokens_per_s=-5",
                "estimate.tokens_per_word={en: 0}"):
        with pytest.raises(ConfigError, match="estimate"):
            _cfg(tmp_path, bad)


def test_dry_run_cli_prints_json_last_and_starts_neither_ray_nor_an_engine(tmp_path):
    cfg_args = ["--set", f"output={tmp_path}/out", "--set", "engine.backend=openai",
                "--set", "engine.model=m", "--set", "input=instructions/demo.jsonl"]
    code = ("import sys, ray; from ray_jobs.common import cli; import ray_jobs.generate as g; "
            "rc = cli(g.CONFIG, g.main, sys.argv[1:], dry_run=g.dry_run); "
            "print('RAY', ray.is_initialized(), 'VLLM', 'vllm' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "--config",
                        "ray_jobs/configs/generate_demo.yaml", *cfg_args, "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "RAY False VLLM False"
    res = json.loads(lines[-2])
    assert res["to_generate"] > 0 and res["output_tokens"] > 0
    assert lines[0].startswith("dry run: ") and not (tmp_path / "out").exists()
    bad = subprocess.run([sys.executable, "-m", "ray_jobs.generate", "--config",
                          "ray_jobs/configs/generate_demo.yaml", *cfg_args, "--dry-run",
                          "--set", "estimate.price_input_per_m=-1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "estimate.price_input_per_m must be > 0" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_pipeline_dry_run_checks_every_stage_and_bounds_the_evaluations(tmp_path, tiny_model):
    args = [sys.executable, "-m", "ray_jobs.pipeline", "--config",
            "ray_jobs/configs/pipeline_mini.yaml", "--set", f"base_model={tiny_model}",
            "--set", f"judge_model={tiny_model}", "--set", f"output={tmp_path}/p", "--dry-run"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    stages = json.loads(r.stdout.strip().splitlines()[-1])["stages"]
    assert list(stages) == ["generate", "curate", "sft", "eval_base", "eval_sft"]
    ev = stages["eval_base"]
    assert ev["output_tokens_at_most"] == ev["prompts"] * ev["max_new_tokens"] > 0
    assert stages["generate"]["to_generate"] > 0
    assert stages["sft"]["answer_tokens_per_row_expected"] == round(
        stages["generate"]["output_tokens"] / stages["generate"]["to_generate"])
    assert not (tmp_path / "p").exists()
    bad = subprocess.run([*args, "--set", "sft.set=[epochs=many]"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "epochs" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
