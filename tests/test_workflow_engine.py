"""The engine's compare-and-set: another writer slipping in between read and write."""

import pytest

from cb.errors import Conflict
from cb.events import EventBus
from cb.storage.memory import MemoryStorage
from cb.workflow import TransitionNotEnabled, Workflow, WorkflowEngine
from cb.workflow.model import Transition


class RacingStorage(MemoryStorage):
    """Runs ``rival()`` just before each token update, as a second worker would."""

    rival = None
    races = 0
    in_rival = False

    def update(self, bucket, key, value, revision):
        if bucket == "tokens" and self.races > 0 and not self.in_rival:
            self.races -= 1
            self.in_rival = True
            try:
                self.rival()
            finally:
                self.in_rival = False
        return super().update(bucket, key, value, revision)


@pytest.fixture
def engine():
    storage = RacingStorage()
    engine = WorkflowEngine(storage, EventBus(storage))
    engine.load_defaults()
    engine.create_workflow(
        Workflow(
            id="loop",
            name="Loop",
            places=("a",),
            initial_place="a",
            transitions=(Transition("touch", "Touch", ("a",), "a"),),
        )
    )
    return engine


def test_a_rival_firing_first_makes_the_loser_not_enabled_and_keeps_one_history_entry(engine):
    token = engine.create_token("document_review", place="reviewed")
    engine.storage.rival = lambda: engine.fire(token.id, "reject")
    engine.storage.races = 1
    with pytest.raises(TransitionNotEnabled):
        engine.fire(token.id, "approve")
    final = engine.get_token(token.id)
    assert final.place == "rejected"
    assert [h.transition for h in final.history] == ["reject"]


def test_the_loser_retries_when_its_transition_is_still_enabled(engine):
    token = engine.create_token("loop", data={"n": 0})
    engine.storage.rival = lambda: engine.fire(token.id, "touch", {"rival": True})
    engine.storage.races = 1
    moved = engine.fire(token.id, "touch", {"mine": True})
    assert moved.data == {"n": 0, "rival": True, "mine": True}
    assert [h.data for h in moved.history] == [{"rival": True}, {"mine": True}]


def test_a_token_that_keeps_changing_gives_conflict(engine):
    token = engine.create_token("loop")
    engine.storage.rival = lambda: engine.fire(token.id, "touch")
    engine.storage.races = 3
    with pytest.raises(Conflict):
        engine.fire(token.id, "touch", {"mine": True})
    assert len(engine.get_token(token.id).history) == 3


def test_place_counts_count_each_token_once_despite_the_stale_path_of_a_lost_race(engine):
    workflow = engine.get_workflow("document_review")
    racer = engine.create_token("document_review", place="reviewed")
    engine.create_token("document_review", place="reviewed")
    engine.create_token("document_review")
    engine.storage.rival = lambda: engine.fire(racer.id, "reject")
    engine.storage.races = 1
    with pytest.raises(TransitionNotEnabled):
        engine.fire(racer.id, "approve")  # leaves a path on "approved" behind
    counts = engine.place_counts(workflow)
    assert list(counts) == list(workflow.places)
    assert counts["reviewed"] == 1 and counts["rejected"] == 1 and counts["approved"] == 0
    assert counts[workflow.initial_place] == 1 and sum(counts.values()) == 3
