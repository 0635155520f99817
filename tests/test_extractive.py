"""The extractive answer: units that make sense on their own, the answering unit first, nothing said twice."""

from __future__ import annotations

from xapp.components.extractive import answer_units, extractive_answer, rank_evidence
from xapp.domain import Passage


def passage(text: str, pid: str = "p", score: float = 0.7) -> Passage:
    return Passage(pid, text, f"{pid}.rst", "", score)


def test_a_sentence_that_refers_back_carries_the_sentence_it_refers_to() -> None:
    units = answer_units(
        "Subscription Manager is a basic platform service in RIC. It is responsible for managing E2 "
        "subscriptions from xApps to the E2 Node."
    )
    assert [u.text for u in units] == [
        "Subscription Manager is a basic platform service in RIC.",
        "Subscription Manager is a basic platform service in RIC. It is responsible for managing E2 "
        "subscriptions from xApps to the E2 Node.",
    ]
    assert units[1].pieces[units[1].core].startswith("It is responsible")


def test_an_announcing_sentence_carries_the_list_or_command_it_announces() -> None:
    listed = answer_units(
        "A list of available environment variables to configure database backend:\n\n"
        "* DBAAS_SERVICE_HOST\n* DBAAS_SERVICE_PORT\n\nAfter DBaaS service is installed, variables are exposed."
    )
    assert listed[0].text == (
        "A list of available environment variables to configure database backend: DBAAS_SERVICE_HOST, "
        "DBAAS_SERVICE_PORT"
    )
    # An RST literal block ("::") after a sentence is what it announces, here a command.
    command = answer_units(
        "Test that the RMR healthcheck is working.\n\n::\n\n"
        "docker exec -it ID /usr/local/bin/rmr_probe -h 127.0.0.1:4560"
    )
    assert command[0].text.endswith("working: docker exec -it ID /usr/local/bin/rmr_probe -h 127.0.0.1:4560")


def test_a_short_list_item_stays_one_unit_with_its_default() -> None:
    units = answer_units(
        "Environment variables:\n"
        "* **CHART_WORKSPACE_PATH**: Temporary directory for the chart artifacts. Default /tmp/xapp_onboarder\n"
        "* **CHART_WORKSPACE_SIZE**: Size limit of the temporary directory. Default 500MB"
    )
    texts = [u.text for u in units]
    assert "**CHART_WORKSPACE_PATH**: Temporary directory for the chart artifacts. Default /tmp/xapp_onboarder" in texts


def test_a_unit_with_the_kind_of_token_the_question_asks_for_ranks_first() -> None:
    # Both sentences share the question's terms; only one holds a port number.
    p = passage(
        "The E2 termination listens for SCTP connections from E2 nodes.\n\n"
        "The E2 termination listens on 36422 for SCTP connections."
    )
    ranked = rank_evidence("Which port does the E2 termination listen on for SCTP connections?", [p])
    assert "36422" in ranked[0].sentence
    # Without a question that asks for a number, the shorter, equally matching sentence is not pushed down.
    ranked = rank_evidence("What does the E2 termination listen for?", [p])
    assert "36422" not in ranked[0].sentence


def test_the_answer_says_no_sentence_twice_and_drops_an_announcement_with_nothing_after_it() -> None:
    passages = [
        passage(
            "Subscription Manager is a basic platform service in RIC. It is responsible for managing E2 "
            "subscriptions from xApps to the E2 Node. It also merges identical subscriptions of two xApps.",
            "a",
            0.8,
        ),
        passage("The following snippet shows its values:", "b", 0.9),
    ]
    text, sources = extractive_answer("Which component manages E2 subscriptions from xApps?", passages)
    assert text.count("Subscription Manager is a basic platform service in RIC.") == 1, text
    assert "responsible for managing E2 subscriptions" in text and "snippet" not in text
    assert sources == ["a.rst"]


def test_without_related_evidence_the_option_closest_to_the_question_is_picked() -> None:
    from xapp.components.extractive import pick_option
    from xapp.store.embedding import MiniLMEmbedder

    question = "Which interface connects the near-RT RIC to the non-RT RIC for policies?"
    options = ("A banana is a yellow fruit.", "The A1 interface carries policies from the non-RT RIC.")
    # A passage far from the question (similarity 0.1) that happens to share the words of the wrong option.
    unrelated = [passage("A banana is a yellow fruit, sold ripe at the market.", score=0.1)]
    embedder = MiniLMEmbedder()
    assert pick_option(question, options, unrelated, embedder) == 1  # scored against it: misled
    assert pick_option(question, options, unrelated, embedder, min_score=0.5) == 2
    assert pick_option(question, options, [], embedder, min_score=0.5) == 2


def test_a_unit_without_a_full_stop_does_not_run_into_the_next() -> None:
    p = passage(
        "Use the following command to open the configmap in an editor.\n\n"
        "Open in default editor:\n\nkubectl edit cm configmap-ricplt-submgr-submgrcfg -n ricplt\n\n"
        "The configmap change is visible in the log after some 20 seconds."
    )
    text, _ = extractive_answer("Which command opens the configmap in an editor?", [p])
    assert "kubectl edit cm configmap-ricplt-submgr-submgrcfg -n ricplt\n" in text, text
