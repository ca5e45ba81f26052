"""Chat prompt -> token ids, keeping the ids the engine generated for earlier model turns.

Why not just re-tokenize the conversation: sampled tokens (under a regex above all) are often not
the canonical tokenization of their text. A demo-model plan decoded under the plan regex was 241
ids, against 211 when its text is re-tokenized, differing from the first id, so a re-tokenized
conversation misses that turn's cached KV. An assistant message that carries `token_ids` is put
back as exactly those ids.

How: the template is rendered with a marker in place of each such turn, the text between the
markers is tokenized piece by piece (each piece ends or starts at a special token, where the
pieces of the original requests ended too), and the ids go in between, with trailing end-of-turn
ids dropped because the template writes its own. Plain rendering is the fallback where splicing
would change the text: ids that do not decode to the turn's text, a tokenizer that tokenizes
pieces differently from the whole (sentencepiece's prefix space), or a template that drops or
repeats a turn.
"""
from __future__ import annotations

import re

from dataset_builder.llm.base import text_only

_MARK = "\ue000{}\ue000"  # private-use code points: no template or real text produces them
_MARK_RE = re.compile("\ue000([0-9]+)\ue000")


def _bare(text: str) -> str:
    return text.replace("\ufffd", "").strip()


class ChatRenderer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.splice = self.tokenize("\n") + self.tokenize("user") == self.tokenize("\nuser")
        self.eos = {tokenizer.eos_token_id} - {None}

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def template(self, messages: list[dict]) -> str:
        """The template's text. A final assistant message is continued (a prefill); otherwise
        the model's turn is opened."""
        cont = messages[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            text_only(messages), tokenize=False,
            add_generation_prompt=not cont, continue_final_message=cont)

    def __call__(self, messages: list[dict]) -> list[int]:
        if not self.splice:
            return self.tokenize(self.template(messages))
        turns = {i: self._turn(m["token_ids"]) for i, m in enumerate(messages)
                 if m["role"] == "assistant" and m.get("token_ids")}
        turns = {i: ids for i, ids in turns.items() if self._spells(ids, messages[i]["content"])}
        if not turns:
            return self.tokenize(self.template(messages))
        marked = [dict(m, content=_MARK.format(i)) if i in turns else m
                  for i, m in enumerate(messages)]
        parts = _MARK_RE.split(self.template(marked))
        if sorted(int(i) for i in parts[1::2]) != sorted(turns):
            return self.tokenize(self.template(messages))
        ids = []
        for j, part in enumerate(parts):
            ids += turns[int(part)] if j % 2 else self.tokenize(part)
        return ids

    def _spells(self, ids: list[int], content: str) -> bool:
        """The turn's ids decode to its text. Why check: a journal written with another model's
        tokenizer (the config changed between runs) has the same text and foreign ids."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # U+FFFD: a turn cut inside a multi-byte character decodes it one way or the other
        return _bare(text) == _bare(content)

    def _turn(self, ids: list[int]) -> list[int]:
        """The ids without trailing end-of-turn ids (the template writes its own)."""
        end = len(ids)
        while end and ids[end - 1] in self.eos:
            end -= 1
        return list(ids[:end])
