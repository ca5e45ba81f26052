"""AgentWrite prompts, written for this project after the paper's structure (arXiv 2408.07055 §3):
the plan prompt asks for one line per paragraph, `Paragraph i - Main Point: ... - Word Count: N
words`; the write prompt gives instruction, plan, text so far, then the current step last, so
consecutive steps share everything up to the end of the text so far (prefix caching).

Why the fixed instructions sit at the top and the tail is one short sentence: everything after
the text so far is new for every step (prefilled again), so the tail is kept to what changes,
the step itself, as in the paper's own prompt.
"""
from __future__ import annotations

PLAN_PROMPT = """Break the writing task below into paragraphs before anything is written. \
Each paragraph gets one line with its main point (specific enough to write from) and a word \
budget. Together the paragraphs must cover the whole task and add up to the required length. \
Each paragraph should have between {min_words} and {max_words} words.

Writing task:
{instruction}

{length_hint}Answer with the plan only, one line per paragraph, in exactly this format:
Paragraph 1 - Main Point: [what this paragraph says] - Word Count: [number] words
Paragraph 2 - Main Point: [what this paragraph says] - Word Count: [number] words
..."""

WRITE_PROMPT = """You are a skilled writer producing a long piece one paragraph at a time. \
You get a writing task, its plan and the text written so far; write the next paragraph of the \
plan, continuing from the text so far. You may open it with a short subtitle. Output only that \
paragraph; do not repeat earlier text and do not mention the plan or word counts.

Writing task:
{instruction}

Plan:
{plan}

Text written so far:
{text}

Now write {step}."""

# Append layout: the plan conversation goes on. Step 1 is one short user turn after the plan the
# model just wrote (whose KV is still cached), and each later step adds (paragraph, short turn),
# so every step's prompt is the previous request's prompt + output + a few tokens.
APPEND_FIRST = """Now write the piece one paragraph at a time, following your plan. Output only \
the paragraph asked for, without mentioning the plan or word counts. Write {step}."""

APPEND_NEXT = "Continue with {step}."

ESTIMATE_PROMPT = """How many words does a complete, high-quality answer to the following \
request need? Answer with a single number only.

Request:
{instruction}"""


def plan_messages(instruction: str, required_words: int | None, min_words: int, max_words: int
                  ) -> list[dict]:
    """The plan request (also the start of the append layout's conversation)."""
    hint = f"The answer must be about {required_words} words long in total.\n\n" \
        if required_words else ""
    return [{"role": "user", "content": PLAN_PROMPT.format(
        instruction=instruction, length_hint=hint, min_words=min_words, max_words=max_words)}]


def step_label(i: int, item: dict) -> str:
    return f"paragraph {i} ({item['main_point']}; about {item['words']} words)"


def format_plan(plan: list[dict]) -> str:
    return "\n".join(f"Paragraph {i} - Main Point: {p['main_point']} - Word Count: {p['words']} words"
                     for i, p in enumerate(plan, start=1))


def write_messages(instruction: str, plan: list[dict], paragraphs: list[str], layout: str,
                   plan_request: list[dict] | None = None, plan_text: str | None = None
                   ) -> list[dict]:
    """Chat messages for the next step (len(paragraphs) + 1) in the given layout.
    `plan_request` (append layout): the plan step's messages, which the conversation extends.
    `plan_text`: the plan exactly as the model wrote it, so its cached KV is reused (a
    reformatted or rescaled plan would differ after a few tokens); the step turns carry the
    budgets actually used. Without it, the validated plan is formatted."""
    k = len(paragraphs) + 1
    if layout == "paper":
        return [{"role": "user", "content": WRITE_PROMPT.format(
            instruction=instruction, plan=format_plan(plan), text="\n\n".join(paragraphs),
            step=step_label(k, plan[k - 1]))}]
    if plan_request is None:
        raise ValueError("layout 'append' needs the plan request's messages")
    msgs = [*plan_request, {"role": "assistant", "content": plan_text or format_plan(plan)},
            {"role": "user", "content": APPEND_FIRST.format(step=step_label(1, plan[0]))}]
    for i, text in enumerate(paragraphs, start=1):
        msgs += [{"role": "assistant", "content": text},
                 {"role": "user", "content": APPEND_NEXT.format(step=step_label(i + 1, plan[i]))}]
    return msgs
