"""core.progress: counts batched per process (never one call per row), exact sums, the lines
and ETAs the jobs print (hand-computed), and bad intervals refused."""
import io

import pytest

from dataset_builder.core import progress
from dataset_builder.core.config import ConfigError
from dataset_builder.generation import progress_line
from eval.evaluate import progress_line as eval_line
from train.sft import train_line


class CountingBoard(progress.Board):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def add(self, counts, gauges):
        self.calls += 1
        super().add(counts, gauges)


def test_meter_batches_counts_into_one_call_and_sums_exactly():
    board = CountingBoard()
    m = progress.Meter(board, flush_s=3600)   # the timer never fires in this test
    try:
        for i in range(1000):
            m.add({"rows_ok": 1, "output_tokens": i}, {"loss": float(i)})
        assert board.calls == 0                # nothing sent per row
        m.flush()
        assert board.calls == 1 and m.sent == 1
        counts, gauges, first = board.snapshot()
        assert counts == {"rows_ok": 1000, "output_tokens": sum(range(1000))}
        assert gauges == {"loss": 999.0} and first is not None
        m.flush()                              # nothing pending: no call
        assert board.calls == 1
    finally:
        m.close()


def test_module_level_add_goes_to_the_attached_board_only():
    a, b = CountingBoard(), CountingBoard()
    try:
        progress.add(x=1)                      # attached to nothing: a no-op
        progress.attach(a)
        progress.add(x=2)
        progress.attach(b)                     # switching flushes what `a` was owed
        progress.add(x=5)
        progress.flush()
        assert a.snapshot()[0] == {"x": 2} and b.snapshot()[0] == {"x": 5}
    finally:
        progress.attach(None)


def test_console_prints_the_jobs_line_from_the_board():
    out, board = io.StringIO(), progress.Board()

    def line(c, g, active_s):
        return f"rows {int(c.get('rows', 0))}/10"
    with progress.Console("job", True, 3600, line, out=out, board=board) as con:
        progress.add(rows=4)                   # the driver's own process counts too
        progress.flush()
        con.print(con.line(*con.snapshot()))
    con.final("rows 10/10")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[job 0:00:") and lines[0].endswith("rows 4/10")
    assert lines[1].endswith("done: rows 10/10")


def test_console_off_makes_no_board_and_prints_nothing():
    out = io.StringIO()
    with progress.Console("job", False, 1, lambda c, g, a: "x", out=out) as con:
        assert con.board is None
    con.final("y")
    assert out.getvalue() == ""


@pytest.mark.parametrize("bad", [0, -1.5])
def test_a_progress_interval_of_zero_or_below_is_refused(bad):
    with pytest.raises(ConfigError, match="progress_interval_s must be > 0"):
        progress.Console("job", True, bad, lambda c, g, a: "")


def test_eta_and_duration():
    assert progress.eta(100, 0, 10) == "-"           # nothing done yet: no rate
    assert progress.eta(300, 100, 50) == "0:02:30"   # 2 units/s, 300 left
    assert progress.duration(3725) == "1:02:05"


def test_generation_line_estimates_words_left_from_plans_and_unplanned_rows():
    # 4 rows sent; 2 planned at 1,000 words each; 1 dropped before its plan; one planned row
    # lost 200 words to a reject: 1,800 planned words stand, plus 1 row still to plan at the
    # planned mean (1,000) = 2,800. 500 written in 100 s -> 5 words/s -> 2,300 / 5 = 460 s.
    line = progress_line(n_todo=4, n_selection_rejects=3, expected_words=3000)
    c = {"agentwrite_ok": 1, "agentwrite_reject": 1, "rows_planned": 2, "words_planned": 2000,
         "rows_dropped": 1, "words_dropped": 200, "words_done": 500, "steps_done": 3,
         "steps_planned": 10, "agentwrite_output_tokens": 1000, "rows_committed": 2}
    text = line(c, {}, 100.0)
    assert "instructions 2/4 done, 4 rejected, 2 committed" in text
    assert "write steps 3/10 planned" in text and "words 500/~2,800" in text
    assert "10 output tok/s" in text and text.endswith("ETA 0:07:40")
    # before any plan, the driver's expected words per row stand in: 4 x 3,000
    assert "words 0/~12,000" in line({}, {}, 0.0) and line({}, {}, 0.0).endswith("ETA -")


def test_evaluation_and_training_lines():
    text = eval_line(n_todo=10, n_judge=10)(
        {"generate_ok": 3, "generate_error": 1, "generate_output_tokens": 800, "judge_ok": 2},
        {}, 40.0)
    assert text == ("responses 4/10 written, 1 failed | 20 output tok/s | judged 2/<=10 | "
                    "ETA 0:01:00")
    text = train_line({"steps": 10, "tokens": 5000}, {"step": 30, "steps_total": 50,
                                                      "loss": 2.5}, 100.0)
    # resumed at step 20: this run's rate (10 steps in 100 s) prices the 20 steps left
    assert text == "step 30/50 | loss 2.500 | 50 tokens/s | ETA 0:03:20"
