"""ChatRenderer (real tokenizer, no engine): generated ids of earlier model turns go back verbatim."""
import pytest
from transformers import AutoTokenizer

from dataset_builder import prompts
from dataset_builder.agentwrite import AgentWriteConfig, prompt_hash, step_messages
from dataset_builder.llm.render import ChatRenderer

PLAN = [{"main_point": "Origins", "words": 90}, {"main_point": "Customs", "words": 80}]


@pytest.fixture(scope="module")
def render(tiny_model):
    return ChatRenderer(AutoTokenizer.from_pretrained(tiny_model))


def _plain(render, msgs):
    return render.tokenize(render.template(msgs))


def test_without_token_ids_it_is_the_template(render):
    msgs = [{"role": "user", "content": "Write about tea."},
            {"role": "assistant", "content": "Tea is old."}, {"role": "user", "content": "More."}]
    assert render.splice and render(msgs) == _plain(render, msgs)


def test_generated_ids_go_back_verbatim_after_the_original_prompt(render):
    ask = [{"role": "user", "content": "Plan an essay on tea."}]
    text = "Paragraph 1 - Main Point: tea"
    # a non-canonical tokenization of the same text (one id per character), ending with EOS
    gen = [i for ch in text for i in render.tokenize(ch)] + [render.tokenizer.eos_token_id]
    assert gen[:-1] != render.tokenize(text)
    msgs = [*ask, {"role": "assistant", "content": text, "token_ids": gen},
            {"role": "user", "content": "Now write paragraph 1."}]
    ids = render(msgs)
    first = render(ask)  # what the plan request sent: the model generated `gen` right after it
    assert ids[:len(first)] == first
    assert ids[len(first):len(first) + len(gen) - 1] == gen[:-1]  # its EOS: the template's own
    # the text is unchanged: only which ids spell it
    assert render.tokenizer.decode(ids) == render.tokenizer.decode(_plain(render, msgs))
    assert ids != _plain(render, msgs)


def test_ids_that_do_not_spell_the_turn_are_ignored(render):
    """E.g. a journal written with another model's tokenizer: same text, foreign ids."""
    msgs = [{"role": "user", "content": "Plan."},
            {"role": "assistant", "content": "Paragraph 1", "token_ids": [101, 102, 103]},
            {"role": "user", "content": "Write it."}]
    assert render(msgs) == _plain(render, msgs)
    # a turn cut inside a multi-byte character still counts as its text (the engine's text
    # leaves the partial character out, a plain decode shows U+FFFD)
    cut = render.tokenize("你好世界")[:-1]
    msgs[1] = {"role": "assistant", "content": "你好世", "token_ids": cut}
    assert render(msgs) != _plain(render, msgs) and cut == render(msgs)[len(render(msgs[:1])):][:len(cut)]


def test_a_final_assistant_turn_is_continued(render):
    ask = [{"role": "user", "content": "Plan an essay on tea."}]
    gen = render.tokenize("Paragraph 1") + [render.tokenizer.eos_token_id]
    ids = render([*ask, {"role": "assistant", "content": "Paragraph 1", "token_ids": gen}])
    assert ids == render(ask) + gen[:-1]


def test_append_steps_carry_each_turns_ids_and_hash_only_text(tiny_model):
    cfg = AgentWriteConfig(layout="append")
    inst = {"id": "x", "prompt": "Write about tea.", "required_words": 170}
    plan_entry = {"plan": PLAN, "text": prompts.format_plan(PLAN), "token_ids": [5, 6]}
    steps = [{"text": "Tea began in China.", "token_ids": [7, 8, 9]}]
    msgs = step_messages(inst, plan_entry, steps, cfg)
    turns = [m for m in msgs if m["role"] == "assistant"]
    assert [m["token_ids"] for m in turns] == [[5, 6], [7, 8, 9]]
    assert [m["content"] for m in turns] == [plan_entry["text"], steps[0]["text"]]
    bare = step_messages(inst, {k: v for k, v in plan_entry.items() if k != "token_ids"},
                         [{"text": steps[0]["text"]}], cfg)
    assert "token_ids" not in bare[1] and prompt_hash(bare) == prompt_hash(msgs)
    paper = step_messages(inst, plan_entry, steps, AgentWriteConfig())
    assert all("token_ids" not in m for m in paper)


def test_tokenizers_that_change_pieces_are_rendered_plainly(render):
    class PrefixSpace:  # sentencepiece-like: every tokenize call adds a leading-space id
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] + [ord(c) for c in text]}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids if i > 1)

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt, continue_final_message):
            return "\n".join(m["content"] for m in msgs)

    r = ChatRenderer(PrefixSpace())
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "token_ids": [ord("b")]}]
    assert not r.splice and r(msgs) == [1, ord("a"), ord("\n"), ord("b")]
