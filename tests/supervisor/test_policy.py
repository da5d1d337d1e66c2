from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pentarun.config import SupervisorConfig
from pentarun.supervisor.policy import (
    EnterQuarantine,
    ErrorLogged,
    Exited,
    HealthFailed,
    HealthOk,
    Kill,
    Phase,
    Policy,
    ProtocolViolation,
    QuarantineRequested,
    Ready,
    Release,
    ResourceExceeded,
    Spawn,
    Start,
    StartupTimeout,
    State,
    StopRequested,
    Transition,
    Wake,
    WakeAt,
)

CONFIG = SupervisorConfig()
POLICY = Policy(CONFIG)


def run(events, state=None, start=0.0):
    """Feed (time, event) pairs; return the final state and every command."""
    state = state or State()
    commands = []
    for now, event in events:
        state, cmds = POLICY.step(state, event, now + start)
        commands += cmds
    return state, commands


def running(now=0.0):
    return run([(now, Start()), (now, Ready())])[0]


def test_start_spawns_and_ready_runs():
    state, cmds = run([(0, Start())])
    assert state.phase is Phase.STARTING
    assert Spawn() in cmds
    state, cmds = POLICY.step(state, Ready(), 0.2)
    assert state.phase is Phase.RUNNING
    assert cmds == [Transition(Phase.RUNNING, "handshake complete")]


def test_first_restart_is_immediate_then_backoff_doubles_with_recorded_retry_time():
    state = running()
    state, cmds = POLICY.step(state, Exited(code=1), 5.0, rand=0.0)
    assert state.phase is Phase.BACKOFF
    assert WakeAt(5.0) in cmds
    transition = next(c for c in cmds if isinstance(c, Transition))
    assert transition.next_retry_at == 5.0
    assert "exited with code 1" in transition.reason and "at once" in transition.reason
    state, cmds = POLICY.step(state, Wake(), 5.0)
    assert Spawn() in cmds and state.restarts == 1
    state, _ = POLICY.step(state, Ready(), 5.2)
    state, cmds = POLICY.step(state, Exited(signal=9), 100.0, rand=0.0)
    assert WakeAt(101.0) in cmds  # the second crash backs off 1 s
    state, _ = POLICY.step(state, Wake(), 101.0)
    state, _ = POLICY.step(state, Ready(), 101.2)
    state, cmds = POLICY.step(state, Exited(signal=9), 190.0, rand=0.0)
    assert WakeAt(192.0) in cmds  # then doubles


def test_crash_loop_of_a_proven_worker_is_marked_for_probation():
    state = running()
    state, _ = POLICY.step(state, HealthOk(), 1.0)
    assert state.proven
    cmds: list = []
    for t in (2.0, 3.0, 5.0):
        state, cmds = POLICY.step(state, Exited(signal=9), t, rand=0.0)
        if state.phase is Phase.BACKOFF:
            state, _ = POLICY.step(state, Wake(), state.next_retry_at)
            state, _ = POLICY.step(state, Ready(), state.next_retry_at or t)
    assert state.phase is Phase.QUARANTINED and state.rule == "crash_loop"
    assert EnterQuarantine("crash_loop", state.reason, probation=True) in cmds


def test_crash_loop_of_a_worker_never_healthy_has_no_probation():
    state = running()
    for t in (2.0, 3.0, 5.0):
        state, cmds = POLICY.step(state, Exited(signal=9), t, rand=0.0)
        if state.phase is Phase.BACKOFF:
            state, _ = POLICY.step(state, Wake(), t + 2)
            state, _ = POLICY.step(state, Ready(), t + 2)
    assert EnterQuarantine("crash_loop", state.reason, probation=False) in cmds
    state, _ = POLICY.step(state, Release(), 10.0)
    assert not state.proven


def test_wake_before_retry_time_does_nothing():
    state, _ = POLICY.step(running(), Exited(code=1), 0.0, rand=0.0)
    state, _ = POLICY.step(state, Wake(), 0.0)
    state, _ = POLICY.step(state, Exited(code=1), 0.1, rand=0.0)  # second crash: 1 s backoff
    assert POLICY.step(state, Wake(), 0.5) == (state, [])


def test_three_crashes_in_window_quarantine_for_crash_loop():
    events = []
    t = 0.0
    for _ in range(2):
        events += [(t, Start() if t == 0 else Wake()), (t + 0.1, Exited(code=1))]
        t += 50.0
    state, _ = run(events)
    assert state.phase is Phase.BACKOFF
    state, cmds = POLICY.step(state, Wake(), t)
    state, cmds = POLICY.step(state, Exited(code=1), t + 0.1)
    assert state.phase is Phase.QUARANTINED
    assert state.rule == "crash_loop"
    assert EnterQuarantine("crash_loop", state.reason) in cmds
    assert "3 crashes" in state.reason


def test_crashes_spread_beyond_window_do_not_quarantine():
    state = running()
    t = 0.0
    for _ in range(10):
        t += 200.0
        state, _ = POLICY.step(state, Exited(code=1), t)
        state, _ = POLICY.step(state, Wake(), t + 100)
        state, _ = POLICY.step(state, Ready(), t + 100)
    assert state.phase is Phase.RUNNING


def test_backoff_resets_after_long_healthy_run():
    state = running()
    for t in (1.0, 70.0):
        state, _ = POLICY.step(state, Exited(code=1), t, rand=0.0)
        state, _ = POLICY.step(state, Wake(), t + 60)
        state, _ = POLICY.step(state, Ready(), t + 60)
    assert state.attempt == 2
    state, cmds = POLICY.step(state, Exited(code=1), 130 + 600, rand=0.0)
    assert WakeAt(730.0) in cmds  # immediate again after 600 s of healthy running


def test_backoff_is_capped():
    assert POLICY.backoff_delay(0, 0.5) == 0.0
    assert POLICY.backoff_delay(1, 0.0) == CONFIG.backoff_initial_s
    assert POLICY.backoff_delay(50, 0.0) == CONFIG.backoff_max_s
    assert POLICY.backoff_delay(4, 0.999) >= 8.0 * (1 - CONFIG.backoff_jitter)


def test_health_restarts_after_three_and_quarantines_after_nine():
    state = running()
    restarts = 0
    t = 0.0
    for _ in range(8):
        t += 10
        state, cmds = POLICY.step(state, HealthFailed(), t)
        if Kill(graceful=True) in cmds:
            restarts += 1
            assert state.phase is Phase.RESTARTING
            state, cmds = POLICY.step(state, Exited(code=0), t + 1)
            assert Spawn() in cmds
            state, _ = POLICY.step(state, Ready(), t + 1.2)
    assert restarts == 2 and state.phase is Phase.RUNNING
    state, cmds = POLICY.step(state, HealthFailed(), t + 10)
    assert state.phase is Phase.QUARANTINED and state.rule == "health"
    assert Kill(graceful=False) in cmds


def test_health_ok_resets_the_count():
    state = running()
    for _ in range(2):
        state, _ = POLICY.step(state, HealthFailed(), 1)
    state, _ = POLICY.step(state, HealthOk(), 2)
    state, cmds = POLICY.step(state, HealthFailed(), 3)
    assert cmds == [] and state.health_failures == 1


def test_error_storm_quarantines():
    state = running()
    for i in range(9):
        state, _ = POLICY.step(state, ErrorLogged(), float(i))
    assert state.phase is Phase.RUNNING
    state, _ = POLICY.step(state, ErrorLogged(), 9.0)
    assert state.phase is Phase.QUARANTINED and state.rule == "error_storm"


def test_errors_outside_window_do_not_storm():
    state = running()
    for i in range(30):
        state, _ = POLICY.step(state, ErrorLogged(), i * 40.0)
    assert state.phase is Phase.RUNNING


def test_startup_timeout_kills_and_counts_as_crash():
    state, _ = run([(0, Start())])
    state, cmds = POLICY.step(state, StartupTimeout(), 30.0)
    assert Kill(graceful=False) in cmds and state.phase is Phase.BACKOFF
    assert len(state.crashes) == 1 and state.process_alive
    # Wake while the old process is still dying waits for its exit.
    assert POLICY.step(state, Wake(), 40.0)[1] == []
    state, cmds = POLICY.step(state, Exited(signal=9), 41.0)
    assert Spawn() in cmds


def test_protocol_violation_kills_at_once_and_counts_as_crash():
    state, cmds = POLICY.step(running(), ProtocolViolation("frame too large"), 1.0)
    assert cmds[0] == Kill(graceful=False)
    assert "protocol violation: frame too large" in state.reason


def test_resource_excess_kills_at_once_and_counts_as_crash():
    state, cmds = POLICY.step(running(), ResourceExceeded("300 MB > 256 MB"), 1.0)
    assert cmds[0] == Kill(graceful=False) and state.phase is Phase.BACKOFF
    assert state.reason.startswith("crashed: resource limit: 300 MB > 256 MB")


def test_stop_is_graceful_and_ends_stopped():
    state, cmds = POLICY.step(running(), StopRequested(), 1.0)
    assert state.phase is Phase.STOPPING and Kill(graceful=True) in cmds
    state, _ = POLICY.step(state, Exited(code=0), 2.0)
    assert state.phase is Phase.STOPPED


def test_a_start_while_stopping_spawns_once_the_old_worker_exits():
    state, _ = POLICY.step(running(), StopRequested("disabled"), 1.0)
    assert state.phase is Phase.STOPPING
    state, cmds = POLICY.step(state, Start(), 1.1)  # enabled again before the old one exited
    assert cmds == [] and state.phase is Phase.STOPPING
    state, cmds = POLICY.step(state, Exited(code=0), 1.5)
    assert state.phase is Phase.STARTING and Spawn() in cmds and state.restarts == 0


def test_a_stop_after_that_start_wins():
    state, _ = POLICY.step(running(), StopRequested("disabled"), 1.0)
    state, _ = POLICY.step(state, Start(), 1.1)
    state, _ = POLICY.step(state, StopRequested("disabled again"), 1.2)
    state, cmds = POLICY.step(state, Exited(code=0), 1.5)
    assert state.phase is Phase.STOPPED and Spawn() not in cmds


def test_stop_during_backoff_stops_without_kill():
    state, _ = POLICY.step(running(), Exited(code=1), 1.0)
    state, cmds = POLICY.step(state, StopRequested(), 1.5)
    assert state.phase is Phase.STOPPED and not any(isinstance(c, Kill) for c in cmds)


def test_quarantine_is_left_only_by_release():
    state, _ = POLICY.step(running(), QuarantineRequested("bad"), 1.0)
    for event in (Start(), Wake(), Ready(), StopRequested(), HealthOk(), Exited(code=0)):
        state, _ = POLICY.step(state, event, 2.0)
        assert state.phase is Phase.QUARANTINED
    state, _ = POLICY.step(state, Release(), 3.0)
    assert state.phase is Phase.STOPPED and state.crashes == ()
    state, cmds = POLICY.step(state, Start(), 4.0)
    assert Spawn() in cmds


events = st.sampled_from(
    [
        Start(),
        Ready(),
        Exited(code=1),
        Exited(signal=9),
        StartupTimeout(),
        ProtocolViolation("x"),
        HealthOk(),
        HealthFailed(),
        ErrorLogged(),
        Wake(),
        StopRequested(),
        QuarantineRequested(),
        Release(),
    ]
)


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.config = SupervisorConfig(crash_limit=3, crash_window_s=120.0)
        self.policy = Policy(self.config)
        self.state = State()
        self.now = 0.0
        self.crash_restarts: list[float] = []

    @rule(event=events, dt=st.floats(0, 90), rand=st.floats(0, 0.999))
    def step(self, event, dt, rand):
        self.now += dt
        before = self.state
        self.state, cmds = self.policy.step(before, event, self.now, rand)
        if before.phase is Phase.QUARANTINED and self.state.phase is not Phase.QUARANTINED:
            assert isinstance(event, Release)
        if isinstance(event, Release):
            self.crash_restarts.clear()
        for cmd in cmds:
            if isinstance(cmd, WakeAt):
                assert cmd.at - self.now <= self.config.backoff_max_s
            if isinstance(cmd, Spawn):
                assert not before.process_alive or isinstance(event, Exited)
                if before.phase is Phase.BACKOFF:
                    self.crash_restarts.append(self.now)
        if self.state.phase in (Phase.STARTING, Phase.RUNNING, Phase.RESTARTING, Phase.STOPPING):
            assert self.state.process_alive

    @precondition(lambda self: self.state.phase is Phase.BACKOFF)
    @rule()
    def wake_on_time(self):
        assert self.state.next_retry_at is not None
        self.now = max(self.now, self.state.next_retry_at)
        self.step(Wake(), 0.0, 0.5)

    @invariant()
    def crash_restarts_are_bounded_in_any_window(self):
        times = self.crash_restarts
        for i, t in enumerate(times):
            inside = [u for u in times[i:] if u - t < self.config.crash_window_s]
            assert len(inside) <= self.config.crash_limit

    @invariant()
    def health_quarantine_threshold_is_never_passed_unquarantined(self):
        if self.state.health_failures >= self.config.health_quarantine_after:
            assert self.state.phase is Phase.QUARANTINED


TestPolicyMachine = PolicyMachine.TestCase
TestPolicyMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
