from hypothesis import given
from hypothesis import strategies as st

from pentarun.supervisor.mailbox import Go, Refuse, Wait, admit
from pentarun.supervisor.policy import Phase

times = st.floats(0, 1e6, allow_nan=False)


def test_running_goes_starting_waits_stopped_refuses():
    assert admit(Phase.RUNNING, None, 0, 10, 1) == Go()
    for phase in (Phase.IDLE, Phase.STARTING, Phase.RESTARTING):
        assert admit(phase, None, 0, 10, 1) == Wait()
    for phase in (Phase.STOPPING, Phase.STOPPED, Phase.QUARANTINED):
        assert admit(phase, None, 0, 10, 1) == Refuse(None)


def test_backoff_waits_only_when_the_restart_can_be_ready_before_the_deadline():
    assert admit(Phase.BACKOFF, 5.0, 0.0, 10.0, 1.0) == Wait()  # ready at 6
    assert admit(Phase.BACKOFF, 9.5, 0.0, 10.0, 1.0) == Refuse(10.5)  # ready at 10.5
    assert admit(Phase.BACKOFF, 0.0, 3.0, 10.0, 1.0) == Wait()  # restart overdue: at once


@given(st.sampled_from(list(Phase)), st.none() | times, times, times, st.floats(0, 60))
def test_a_refusal_names_a_positive_retry_time_and_waiting_is_bounded(
    phase, retry_at, now, budget, startup
):
    decision = admit(phase, retry_at, now, now + budget, startup)
    if isinstance(decision, Refuse) and decision.retry_after_s is not None:
        assert phase is Phase.BACKOFF
        assert decision.retry_after_s > budget - 1e-9
    if phase is Phase.BACKOFF and isinstance(decision, Wait):
        assert max(now, retry_at if retry_at is not None else now) + startup <= now + budget
