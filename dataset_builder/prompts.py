"""AgentWrite prompts, written for this project after the paper's structure (arXiv 2408.07055 §3):
the plan prompt asks for one line per paragraph, `Paragraph i - Main Point: ... - Word Count: N
words`; the write prompt gives instruction, plan, text so far, then the current step last, so
consecutive steps share everything up to the end of the text so far (prefix caching).
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

WRITE_PROMPT = """You are a skilled writer producing a long piece one paragraph at a time.

Writing task:
{instruction}

Plan:
{plan}

Text written so far:
{text}

Following the task and the plan, and continuing from the text so far, now write {step}. \
You may open it with a short subtitle. Output only this paragraph; do not repeat earlier text \
and do not mention the plan or word counts."""

# Append layout: the conversation grows by (assistant paragraph, short user turn), so step k+1's
# prompt is step k's prompt + its output + a few tokens: near-total prefix reuse.
APPEND_FIRST = """Writing task:
{instruction}

Plan:
{plan}

We will write this piece one paragraph at a time, following the plan. Output only the \
paragraph asked for, without mentioning the plan or word counts. Write {step}."""

APPEND_NEXT = "Continue with {step}."

ESTIMATE_PROMPT = """How many words does a complete, high-quality answer to the following \
request need? Answer with a single number only.

Request:
{instruction}"""


def step_label(i: int, item: dict) -> str:
    return f"paragraph {i} ({item['main_point']}; about {item['words']} words)"


def format_plan(plan: list[dict]) -> str:
    return "\n".join(f"Paragraph {i} - Main Point: {p['main_point']} - Word Count: {p['words']} words"
                     for i, p in enumerate(plan, start=1))


def write_messages(instruction: str, plan: list[dict], paragraphs: list[str], layout: str
                   ) -> list[dict]:
    """Chat messages for the next step (len(paragraphs) + 1) in the given layout."""
    k = len(paragraphs) + 1
    plan_text = format_plan(plan)
    if layout == "paper":
        return [{"role": "user", "content": WRITE_PROMPT.format(
            instruction=instruction, plan=plan_text, text="\n\n".join(paragraphs),
            step=step_label(k, plan[k - 1]))}]
    msgs = [{"role": "user", "content": APPEND_FIRST.format(
        instruction=instruction, plan=plan_text, step=step_label(1, plan[0]))}]
    for i, text in enumerate(paragraphs, start=1):
        msgs += [{"role": "assistant", "content": text},
                 {"role": "user", "content": APPEND_NEXT.format(step=step_label(i + 1, plan[i]))}]
    return msgs
