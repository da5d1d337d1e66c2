import pytest

from pentarun.config import load_config
from pentarun.errors import BadRequest


def test_defaults_match_the_spec():
    config = load_config(environ={})
    assert config.server.admin_bind == "127.0.0.1:8128"
    s = config.supervisor
    assert (s.backoff_initial_s, s.backoff_max_s, s.backoff_reset_s) == (1.0, 60.0, 600)
    assert (s.crash_limit, s.crash_window_s) == (3, 120)
    assert (s.health_interval_s, s.health_timeout_s) == (10, 2)
    assert (s.health_restart_after, s.health_quarantine_after) == (3, 9)
    assert (s.error_storm_count, s.error_storm_window_s) == (10, 300)
    assert (s.startup_timeout_s, s.stop_timeout_s) == (30, 5)
    assert config.listeners == {"homeassistant": "0.0.0.0:8129"}


def test_file_then_environment_overrides(tmp_path):
    path = tmp_path / "pentarun.toml"
    path.write_text('[supervisor]\ncrash_limit = 5\n[server]\ndata_dir = "/srv"\n')
    env = {"PENTARUN_SUPERVISOR__CRASH_LIMIT": "7", "PENTARUN_SECURITY__REQUIRE_SIGNATURES": "true"}
    config = load_config(path, environ=env)
    assert config.supervisor.crash_limit == 7
    assert config.server.data_dir == "/srv"
    assert config.security.require_signatures is True


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("[supervisor]\ncrash_limt = 5\n", {}),
        ("[nosuch]\nx = 1\n", {}),
        ("", {"PENTARUN_SUPERVISOR__CRASH_LIMIT": "many"}),
        ("not toml [", {}),
    ],
)
def test_typos_and_bad_values_are_refused(tmp_path, text, env):
    path = tmp_path / "pentarun.toml"
    path.write_text(text)
    with pytest.raises(BadRequest):
        load_config(path, environ=env)


def test_sandbox_settings_that_would_weaken_it_are_refused():
    for key, value in (("sandbox_uid_base", "0"), ("sandbox_tmp_mb", "0"), ("sandbox", "maybe")):
        with pytest.raises(BadRequest, match=key if key != "sandbox" else "sandbox"):
            load_config(environ={f"PENTARUN_SECURITY__{key.upper()}": value})


def test_camera_thresholds_live_in_the_configuration_bounded():
    config = load_config(environ={"PENTARUN_CAMERAS__MAX_FPS": "5"})
    assert config.cameras.max_fps == 5 and config.cameras.jpeg_quality == 80
    for key, value in (
        ("max_fps", "0"),
        ("max_frame_bytes", str(64 * 2**20)),
        ("jpeg_quality", "1"),
    ):
        with pytest.raises(BadRequest, match=key):
            load_config(environ={f"PENTARUN_CAMERAS__{key.upper()}": value})
