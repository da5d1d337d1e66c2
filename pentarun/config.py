"""Frozen settings: TOML file, then `PENTARUN_<SECTION>__<KEY>` environment overrides.

Every threshold of the runtime lives here, with the defaults of SPEC §10. Unknown sections or
keys and values of the wrong type are refused with the offending path, so a typo never passes
silently.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .cameras.backoff import Backoff
from .errors import BadRequest


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    admin_bind: str = "127.0.0.1:8128"
    data_dir: str = "./var"
    # admin API request bodies, refused (413) before they are read; uploads use
    # install.max_package_bytes; a plugin configuration is also kept under the IPC frame limit
    max_json_body_bytes: int = 64 * 1024
    max_config_body_bytes: int = 256 * 1024


class SupervisorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2
    backoff_reset_s: float = 600.0
    crash_limit: int = 3
    crash_window_s: float = 120.0
    health_interval_s: float = 10.0
    health_timeout_s: float = 2.0
    health_restart_after: int = 3
    health_quarantine_after: int = 9
    error_storm_count: int = 10
    error_storm_window_s: float = 300.0
    startup_timeout_s: float = 30.0
    stop_timeout_s: float = 5.0
    call_timeout_s: float = 10.0
    max_in_flight: int = 256
    max_frame_bytes: int = 8 * 1024 * 1024
    token_ttl_s: float = 900.0
    log_lines_kept: int = 200
    log_records_per_s: int = 1000
    memory_check_s: float = 1.0
    storage_check_s: float = 5.0  # how often a sandboxed worker's /data is measured
    # a crash-loop quarantine of a plugin that served well is re-tested on its own after
    # probation_s, at most probation_attempts times (0 turns probation off)
    probation_s: float = 600.0
    probation_attempts: int = 3
    # an upgrade's old worker finishes its calls and streams for at most this long, then stops
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    require_signatures: bool = False
    auto_approve_level: str = "read"
    trust_store: str = ""  # directory of <key_id>.pub files; empty = <data_dir>/trusted_keys
    # "on": every worker runs in a sandbox (fail closed); "off" only by an explicit operator
    # choice, reported at start, in /readyz, in every plugin's detail and in the audit log
    sandbox: Literal["on", "off"] = "on"
    # per-plugin host uids (base .. base+65535) when the server runs as root: never 0 or a
    # system uid
    sandbox_uid_base: Annotated[int, msgspec.Meta(ge=10_000, le=2**31 - 2**16)] = 200_000
    # each worker's private /tmp (a tmpfs; 0 would mean unbounded to bubblewrap)
    sandbox_tmp_mb: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 64
    sandbox_open_files: Annotated[int, msgspec.Meta(ge=64, le=1_048_576)] = 1024
    # each plugin's private /data: over it the worker is stopped
    sandbox_data_mb: Annotated[int, msgspec.Meta(ge=1)] = 256


class InstallConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    wheelhouse: str = ""
    index_url: str = ""
    auto_enable: bool = False
    pip_timeout_s: float = 600.0
    load_burst: int = 50
    max_concurrent_suites: int = 2  # full test suites at once, server-wide (each starts workers)
    max_package_bytes: int = 64 * 1024 * 1024
    max_files: int = 2000
    max_total_bytes: int = 256 * 1024 * 1024
    max_compression_ratio: float = 200.0
    # a directory of package zips offering newer versions (packages/catalog.py); "" for none
    catalog_dir: str = ""
    catalog_scan_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    # development builds (`pentarun plugin dev`, versions `x.y.z+dev.N`): a development
    # server only
    allow_dev_builds: bool = False


class StorageConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-plugin quotas (all its properties together): the files of `ctx.storage`, kept under
    `<data_dir>/storage/` (lanes/storage.py), and the values of `ctx.store`, kept in the
    database; over either a write is refused (409 `storage_full` / `store_full`)."""

    quota_mb: Annotated[int, msgspec.Meta(ge=1, le=1_048_576)] = 256
    store_mb: Annotated[int, msgspec.Meta(ge=1, le=16_384)] = 16


class RecordingsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Recordings (pentarun/recordings/): clips kept under `dir` (empty: <data_dir>/recordings).

    Retention, per property, every `retention_interval_s`: a clip that ended more than
    `max_age_h` hours ago goes, then the oldest go while the property's clips hold more than
    `max_mb`. A clip lasts `default_duration_s` unless asked otherwise, at most
    `max_duration_s` and `max_clip_mb`, with at most `max_fps` frames a second; at most
    `max_active` clips are recorded at once, server-wide.
    """

    dir: str = ""
    max_age_h: Annotated[float, msgspec.Meta(gt=0, le=24 * 366)] = 72.0
    max_mb: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 2048
    retention_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    default_duration_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_duration_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0
    max_clip_mb: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512
    max_fps: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    max_active: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 32


class BenchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Performance tiers: highest p95 latency (ms) and error rate of each; bronze is the rest."""

    window_s: float = 60.0
    platinum_p95_ms: float = 500.0
    platinum_error_rate: float = 0.001
    gold_p95_ms: float = 1000.0
    gold_error_rate: float = 0.01
    silver_p95_ms: float = 2000.0
    silver_error_rate: float = 0.05


class EgressConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The egress lane (lanes/egress.py): each plugin's proxy and its bounds.

    Per plugin: `requests_per_minute` requests (CONNECT tunnels and forwarded requests; a
    burst may use the whole minute's budget) and `max_connections` at once. Per forwarded
    request: a body of at most `max_request_bytes`, a response body of at most
    `max_response_bytes`, `request_timeout_s` from its head to the response's last byte
    (resolving and dialling included). Per CONNECT
    tunnel: `max_tunnel_bytes` both ways together, `tunnel_timeout_s` in all. Dialling (name
    resolution and connect) takes at most `connect_timeout_s`; the request head must arrive
    within `header_timeout_s` and fit `max_header_bytes`. An open connection is checked
    against the grants again every `grant_recheck_s` (a revoked grant cuts it). `socket_dir`
    holds the plugins' proxy sockets (empty: <data_dir>/egress).
    """

    requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 300
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 16
    max_request_bytes: Annotated[int, msgspec.Meta(ge=0)] = 8 * 1024 * 1024
    max_response_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 * 1024 * 1024
    max_tunnel_bytes: Annotated[int, msgspec.Meta(ge=0)] = 128 * 1024 * 1024
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    tunnel_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024
    grant_recheck_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    socket_dir: str = ""


PublicUrl = Annotated[str, msgspec.Meta(pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")]


class ListenerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A plugin listener's settings: `[listeners.<name>]` (or just `<name> = "host:port"`).

    `public_url` is where clients reach the listener (behind a proxy, say); URLs handed out
    (snapshot and stream URLs) start with it, else with the address the request arrived on,
    never with the request's Host header. `rate_limit` requests per `rate_window_s` per key
    replace the manifest's (the default of 600 per 60 s carries a Home Assistant polling 10
    cameras: plugins/homeassistant/README.md); a key created with its own limit keeps it. An
    address that fails authentication `auth_failures` times in `auth_failure_window_s` is
    answered 429, whatever it presents, until that window ends. Bodies are at most
    `max_body_bytes`.
    """

    bind: str = ""  # HOST:PORT (port 0 allowed); empty: 0.0.0.0 and the manifest's port
    public_url: PublicUrl = ""
    rate_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    rate_window_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    auth_failures: Annotated[int, msgspec.Meta(ge=1)] = 20
    auth_failure_window_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024

    @staticmethod
    def of(value: str | ListenerConfig) -> ListenerConfig:
        """The table form of a `[listeners]` entry (a plain string is the bind address)."""
        return ListenerConfig(bind=value) if isinstance(value, str) else value


class ConsoleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The operator console (gateway/console): its sign-in sessions and where it is reached.

    A session ends `session_idle_s` after its last request and `session_absolute_s` after it
    began, whichever comes first (and at once when its operator is removed or signs out).
    `public_url` is where operators reach the console (behind a TLS proxy, say): an https one
    makes the session cookie `Secure`, and changes must come from its origin. An address that
    fails to sign in `signin_failures` times within `signin_failure_window_s` is refused
    (429) until that window ends.
    """

    session_idle_s: Annotated[float, msgspec.Meta(ge=60, le=24 * 3600)] = 3600.0
    session_absolute_s: Annotated[float, msgspec.Meta(ge=300, le=7 * 24 * 3600)] = 12 * 3600.0
    public_url: PublicUrl = ""
    signin_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    signin_failure_window_s: Annotated[float, msgspec.Meta(gt=0, le=24 * 3600)] = 300.0
    # the addresses of reverse proxies in front of the console (the TLS proxy of
    # `public_url`): a request from one of them is counted against the address it names
    # last in X-Forwarded-For, not against the proxy (which would lock every operator out)
    trusted_proxies: Annotated[list[str], msgspec.Meta(max_length=16)] = []

    def __post_init__(self) -> None:
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_address(proxy)
            except ValueError:
                raise ValueError(
                    f"console.trusted_proxies: {proxy!r} is not an IP address"
                ) from None
        if self.session_idle_s > self.session_absolute_s:
            raise ValueError("console.session_idle_s must not exceed console.session_absolute_s")


class CamerasConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Camera sources (cameras/): how long to wait for a camera and how often to ask it,
    frame bounds, how PyAV frames are encoded, and the reconnect backoff."""

    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0  # silent: offline
    snapshot_interval_s: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 1.0  # `http`
    # a bigger frame is an error (an IPC frame holds 8 MiB)
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=6 * 1024 * 1024)] = 4 * 2**20
    max_fps: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0  # PyAV sources, at most
    jpeg_quality: Annotated[int, msgspec.Meta(ge=10, le=95)] = 80  # PyAV frames only
    reconcile_s: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 2.0  # reread the table
    wait_frame_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0  # a consumer's wait
    demo_fps: Annotated[float, msgspec.Meta(gt=0, le=30)] = 5.0
    backoff: Backoff = msgspec.field(default_factory=Backoff)


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    install: InstallConfig = msgspec.field(default_factory=InstallConfig)
    bench: BenchConfig = msgspec.field(default_factory=BenchConfig)
    egress: EgressConfig = msgspec.field(default_factory=EgressConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    recordings: RecordingsConfig = msgspec.field(default_factory=RecordingsConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    cameras: CamerasConfig = msgspec.field(default_factory=CamerasConfig)
    listeners: dict[str, str | ListenerConfig] = msgspec.field(
        default_factory=lambda: {"homeassistant": "0.0.0.0:8129"}
    )


ENV_PREFIX = "PENTARUN_"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        overrides.setdefault(section.lower(), {})[key.lower()] = value
    return overrides


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """Build the settings from a TOML file, the environment, then explicit section overrides."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadRequest(f"cannot read config {path}: {exc}") from exc
    env = _env_overrides(os.environ if environ is None else environ)
    for layer in (env, sections):
        for section, values in layer.items():
            raw.setdefault(section, {}).update(values)
    try:
        # strict=False lets environment strings become numbers and booleans.
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid configuration: {exc}") from exc
