from hypothesis import given
from hypothesis import strategies as st

from pentarun.supervisor.events import Evidence
from pentarun.supervisor.handover import (
    DrainReport,
    Load,
    Started,
    StartFailed,
    Starting,
    drain_report,
    start_outcome,
)
from pentarun.supervisor.policy import Phase, State

counts = st.integers(0, 50)


def test_a_successor_is_started_only_by_its_first_worker_passing_the_handshake():
    assert start_outcome(State()) == Starting()
    assert start_outcome(State(phase=Phase.STARTING)) == Starting()
    assert start_outcome(State(phase=Phase.RUNNING)) == Started()
    # a worker that crashed once and came back is not one to hand calls to
    assert isinstance(start_outcome(State(phase=Phase.RUNNING, restarts=1)), StartFailed)
    assert isinstance(start_outcome(State(phase=Phase.STARTING, crashes=(1.0,))), StartFailed)


def test_a_failed_start_says_where_it_stopped_and_keeps_the_evidence():
    evidence = Evidence(last_exit="exited with code 3", last_log_lines=["boom"])
    state = State(phase=Phase.BACKOFF, reason="crashed: exited with code 3; restarting at once")
    failed = start_outcome(state, evidence)
    assert failed == StartFailed(
        "BACKOFF: crashed: exited with code 3; restarting at once", evidence
    )
    assert start_outcome(State(phase=Phase.STOPPED)) == StartFailed("STOPPED")


@given(st.sampled_from(list(Phase)), st.integers(0, 3), st.booleans())
def test_only_a_first_run_that_is_running_is_started(phase, restarts, crashed):
    state = State(phase=phase, restarts=restarts, crashes=(1.0,) if crashed else ())
    outcome = start_outcome(state)
    assert isinstance(outcome, Started) == (phase is Phase.RUNNING and not restarts and not crashed)
    if restarts or crashed:
        assert isinstance(outcome, StartFailed)
    if isinstance(outcome, Starting):
        assert phase in (Phase.IDLE, Phase.STARTING)


def test_a_drain_with_nothing_open_reports_nothing():
    assert drain_report(Load(), Load(), 0.01, False) == DrainReport(waited_s=0.01)


def test_calls_finished_moved_and_cut_and_streams_cut_at_the_timeout():
    report = drain_report(
        Load(calls=4, streams=1, streams_started=7, calls_moved=2),
        Load(calls=1, streams=2, streams_started=8, calls_moved=3),
        30.0,
        True,
    )
    assert report == DrainReport(
        calls_in_flight=4,
        calls_finished=2,
        calls_moved=1,
        calls_cut=1,
        streams=2,  # one open at the hand over, one started by a call in flight then
        streams_finished=0,
        streams_cut=2,
        waited_s=30.0,
        timed_out=True,
    )


@st.composite
def drains(draw):
    """A predecessor's load at the hand over and at the drain's end, as the actor counts it:
    calls only end or move (none start: new ones go to the successor), streams only start from
    calls in flight, and running totals only grow."""
    calls, streams, started, moved = draw(counts), draw(counts), draw(counts), draw(counts)
    moved_now = draw(st.integers(0, calls))
    still_open = draw(st.integers(0, calls - moved_now))
    new_streams = draw(st.integers(0, calls))
    open_streams = draw(st.integers(0, streams + new_streams))
    at_handover = Load(calls, streams, started, moved)
    at_end = Load(still_open, open_streams, started + new_streams, moved + moved_now)
    return at_handover, at_end


@given(drains(), st.floats(0, 60), st.booleans())
def test_every_call_and_stream_is_counted_once(drain, waited, timed_out):
    at_handover, at_end = drain
    report = drain_report(at_handover, at_end, waited, timed_out)
    assert report.calls_finished + report.calls_moved + report.calls_cut == report.calls_in_flight
    assert report.streams_finished + report.streams_cut == report.streams
    assert min(report.calls_finished, report.calls_moved, report.calls_cut) >= 0
    assert min(report.streams_finished, report.streams_cut) >= 0
    assert report.calls_in_flight == at_handover.calls
    if at_end.calls == 0 and at_end.streams == 0:  # the drain ended with nothing left open
        assert report.calls_cut == 0 and report.streams_cut == 0
    assert report.timed_out is timed_out and report.waited_s >= 0
