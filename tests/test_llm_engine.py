"""The vLLM engine on the tiny W8A8 Qwen2 model: counts, stop strings, deadlines and cancellation.

Every test leaves the shared engine idle; the random-weight model never emits EOS, so a request runs until
``max_tokens``, a stop string, the deadline or a cancellation ends it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from xapp.errors import EngineUnavailable
from xapp.llm.base import Generation

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You answer questions about O-RAN."},
    {"role": "user", "content": "What does the near-RT RIC do?"},
]


def far() -> float:
    return time.monotonic() + 120


def test_engine_serves_the_w8a8_checkpoint(llm_engine, tiny_w8a8_dir: Path) -> None:
    assert llm_engine.quantization == "compressed-tensors"
    assert llm_engine.model.path == str(tiny_w8a8_dir.resolve())
    assert llm_engine.model_name == "tiny-qwen2-w8a8"


def test_generate_returns_text_tokens_and_timings(llm_engine, run) -> None:
    prompt = llm_engine.prompt_token_ids(MESSAGES)
    gen = run(llm_engine.generate(MESSAGES, max_tokens=12, deadline=far()))
    assert isinstance(gen, Generation)
    assert gen.prompt_tokens == len(prompt) > 10
    assert gen.completion_tokens == 12
    assert gen.finish_reason == "length"
    assert not gen.aborted
    assert gen.text
    assert 0 < gen.ttft_s <= gen.total_s
    assert llm_engine.num_unfinished_requests() == 0


def test_chat_template_is_applied(llm_engine) -> None:
    ids = llm_engine.prompt_token_ids(MESSAGES)
    text = llm_engine._tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou answer questions about O-RAN.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_a_repeated_system_prefix_is_served_from_the_prefix_cache(llm_engine, run) -> None:
    # A nonce leads the system turn so that no earlier test's prompt shares a cache block with this one.
    messages = [
        {"role": "system", "content": f"[{uuid.uuid4().hex}] " + "You answer questions about O-RAN. " * 8},
        {"role": "user", "content": "What does the near-RT RIC do?"},
    ]
    other_question = [messages[0], {"role": "user", "content": "Which interface carries A1 policies?"}]
    before = llm_engine.stats.cached_prompt_tokens
    first = run(llm_engine.generate(messages, max_tokens=2, deadline=far()))
    after_first = llm_engine.stats.cached_prompt_tokens
    run(llm_engine.generate(other_question, max_tokens=2, deadline=far()))
    cached = llm_engine.stats.cached_prompt_tokens - after_first
    assert after_first == before  # nothing of the first prompt was cached
    system_tokens = len(llm_engine.prompt_token_ids(messages[:1]))
    assert first.prompt_tokens > system_tokens >= 32
    # Whole KV blocks of the shared system turn come from the cache.
    block = llm_engine.block_size
    assert cached % block == 0
    assert system_tokens - block <= cached <= system_tokens + block

    # After a reset (benches, between strategies) the same prompt is prefilled again from nothing.
    run(llm_engine.reset_prefix_cache())
    again = run(llm_engine.generate(other_question, max_tokens=2, deadline=far()))
    assert again.cached_tokens == 0


def test_greedy_generation_is_deterministic(llm_engine, run) -> None:
    first = run(llm_engine.generate(MESSAGES, max_tokens=10, deadline=far()))
    second = run(llm_engine.generate(MESSAGES, max_tokens=10, deadline=far()))
    assert first.text == second.text


def test_stop_string_ends_the_generation_before_it(llm_engine, run) -> None:
    free = run(llm_engine.generate(MESSAGES, max_tokens=24, deadline=far()))
    stop = free.text[len(free.text) // 2 :][:2]
    assert stop
    stopped = run(llm_engine.generate(MESSAGES, max_tokens=24, deadline=far(), stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert not stopped.aborted
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.completion_tokens < 24


def test_concurrent_requests_all_finish(llm_engine, run) -> None:
    async def four() -> list[Generation]:
        return list(
            await asyncio.gather(*(llm_engine.generate(MESSAGES, max_tokens=8, deadline=far()) for _ in range(4)))
        )

    gens = run(four())
    assert [g.completion_tokens for g in gens] == [8, 8, 8, 8]
    assert len({g.text for g in gens}) == 1  # greedy: same prompt, same text
    assert llm_engine.num_unfinished_requests() == 0


def test_deadline_aborts_with_partial_text_and_leaves_nothing_running(llm_engine, run) -> None:
    budget = 1.0
    started = time.monotonic()
    gen = run(llm_engine.generate(MESSAGES, max_tokens=1800, deadline=started + budget))
    elapsed = time.monotonic() - started
    assert gen.aborted
    assert gen.finish_reason == "deadline"
    assert 0 < gen.completion_tokens < 1800
    assert llm_engine.stats.aborted >= 1
    assert gen.text
    assert budget <= elapsed < budget + 0.5
    assert gen.ttft_s <= gen.total_s
    assert llm_engine.num_unfinished_requests() == 0
    # The engine is healthy afterwards.
    assert run(llm_engine.generate(MESSAGES, max_tokens=4, deadline=far())).completion_tokens == 4


def test_deadline_already_passed_submits_nothing(llm_engine, run) -> None:
    gen = run(llm_engine.generate(MESSAGES, max_tokens=50, deadline=time.monotonic() - 0.01))
    assert gen.aborted
    assert gen.finish_reason == "deadline"
    assert gen.completion_tokens == 0
    assert gen.text == ""
    assert gen.prompt_tokens > 0
    assert llm_engine.num_unfinished_requests() == 0


def test_cancelling_the_caller_aborts_the_request(llm_engine, run) -> None:
    async def cancel_midway() -> tuple[int, int]:
        task = asyncio.ensure_future(llm_engine.generate(MESSAGES, max_tokens=1800, deadline=far()))
        while llm_engine.num_unfinished_requests() == 0:
            assert not task.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # let it decode a little
        running = llm_engine.num_unfinished_requests()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running, llm_engine.num_unfinished_requests()

    running, after = run(cancel_midway())
    assert running == 1
    assert after == 0
    assert run(llm_engine.generate(MESSAGES, max_tokens=3, deadline=far())).completion_tokens == 3


def test_cancelling_one_of_several_leaves_the_others_running(llm_engine, run) -> None:
    async def scenario() -> tuple[Generation, Generation, int]:
        doomed = asyncio.ensure_future(llm_engine.generate(MESSAGES, max_tokens=1800, deadline=far()))
        keep_a = asyncio.ensure_future(llm_engine.generate(MESSAGES, max_tokens=16, deadline=far()))
        keep_b = asyncio.ensure_future(llm_engine.generate(MESSAGES, max_tokens=16, deadline=far()))
        await asyncio.sleep(0.2)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        a, b = await asyncio.gather(keep_a, keep_b)
        return a, b, llm_engine.num_unfinished_requests()

    a, b, left = run(scenario())
    assert a.completion_tokens == b.completion_tokens == 16
    assert not a.aborted and not b.aborted
    assert left == 0


def test_max_tokens_is_capped_by_the_context_window(llm_engine, run) -> None:
    # A prompt that leaves only a few tokens of room: asking for many more must end with "length" at the
    # window's edge instead of being rejected by vLLM.
    n = 2000
    while True:
        messages = [{"role": "user", "content": "RIC " * n}]
        room = llm_engine.max_model_len - len(llm_engine.prompt_token_ids(messages))
        if room >= 4:
            break
        n -= 1
    assert room < 40
    gen = run(llm_engine.generate(messages, max_tokens=5000, deadline=far()))
    assert gen.finish_reason == "length"
    assert gen.completion_tokens == room
    assert llm_engine.num_unfinished_requests() == 0


def test_prompt_longer_than_the_context_is_refused(llm_engine, run) -> None:
    huge = [{"role": "user", "content": "near-RT RIC " * 3000}]
    with pytest.raises(EngineUnavailable, match="max_model_len"):
        run(llm_engine.generate(huge, max_tokens=4, deadline=far()))
    assert llm_engine.num_unfinished_requests() == 0


def test_invalid_max_tokens_is_refused(llm_engine, run) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        run(llm_engine.generate(MESSAGES, max_tokens=0, deadline=far()))


def test_a_second_engine_in_the_process_is_refused(llm_engine, run, tiny_w8a8_dir: Path) -> None:
    from xapp.llm.engine import EngineConfig, VLLMEngine

    async def second() -> None:
        async with VLLMEngine.start(EngineConfig(model=str(tiny_w8a8_dir))):
            pass

    with pytest.raises(EngineUnavailable, match="already running"):
        run(second())


def test_generate_streams_its_text_piece_by_piece(llm_engine, run) -> None:
    pieces: list[str] = []
    gen = run(llm_engine.generate(MESSAGES, max_tokens=12, deadline=far(), on_text=pieces.append))
    assert len(pieces) >= 2 and all(pieces)
    assert "".join(pieces) == gen.text


def test_choose_returns_a_distribution_over_the_option_labels(llm_engine, run) -> None:
    messages = MESSAGES + [{"role": "user", "content": "Options: A. E2 B. A1 C. O1 D. O2. Reply with the letter."}]
    labels = ["A", "B", "C", "D"]
    choice = run(llm_engine.choose(messages, labels, deadline=far()))
    assert not choice.aborted
    assert len(choice.probabilities) == 4
    assert sum(choice.probabilities) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= p <= 1.0 for p in choice.probabilities)
    best = max(choice.probabilities)
    assert choice.index == choice.probabilities.index(best)
    assert choice.prompt_tokens == llm_engine.prompt_tokens(messages)
    assert llm_engine.num_unfinished_requests() == 0


def test_choose_past_its_deadline_is_aborted_and_leaves_nothing_running(llm_engine, run) -> None:
    choice = run(llm_engine.choose(MESSAGES, ["1", "2"], deadline=time.monotonic() - 1))
    assert choice.aborted and choice.index is None and choice.probabilities == ()
    assert llm_engine.num_unfinished_requests() == 0


def test_choose_refuses_labels_that_are_not_one_token(llm_engine, run) -> None:
    with pytest.raises(ValueError, match="not one"):
        run(llm_engine.choose(MESSAGES, ["1", "near-RT RIC controller"], deadline=far()))


_SPECULATING_ENGINE = """
import asyncio, json, sys, time
from pathlib import Path
from xapp.llm.engine import EngineConfig, VLLMEngine

async def main() -> None:
    config = EngineConfig(model=sys.argv[1], data_dir=Path(sys.argv[2]), kv_cache_gib=0.25, ngram_speculation=3)
    async with VLLMEngine.start(config) as engine:
        messages = [{"role": "user", "content": "Options: A. E2 B. A1 C. O1. Reply with the letter."}]
        choice = await engine.choose(messages, ["A", "B", "C"], deadline=time.monotonic() + 60)
        pieces = []
        gen = await engine.generate(messages, max_tokens=12, deadline=time.monotonic() + 60, on_text=pieces.append)
        out = {"p": choice.probabilities, "aborted": choice.aborted, "tokens": gen.completion_tokens,
               "joined": "".join(pieces) == gen.text, "left": engine.num_unfinished_requests()}
        print("RESULT " + json.dumps(out), flush=True)

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.slow
def test_an_engine_with_ngram_speculation_still_chooses_and_streams(tiny_w8a8_dir: Path, tmp_path: Path) -> None:
    """Its own process (one engine per process): vLLM returns no logprob_token_ids while speculating, so the
    choice comes from the top-k log-probabilities."""
    import json
    import subprocess
    import sys

    script = tmp_path / "speculating.py"
    script.write_text(_SPECULATING_ENGINE)
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_w8a8_dir), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, done.stdout[-2000:] + done.stderr[-2000:]
    out = json.loads(result[-1].removeprefix("RESULT "))
    assert not out["aborted"] and len(out["p"]) == 3 and sum(out["p"]) == pytest.approx(1.0, abs=1e-6)
    assert out["tokens"] == 12 and out["joined"] and out["left"] == 0
