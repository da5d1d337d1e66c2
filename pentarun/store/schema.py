"""DDL and versioned migrations. `PRAGMA user_version` holds the applied version.

Migrations are append-only: never edit one that has shipped, add the next.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the five platform tables, plugin state, audit, properties, operators
    """
    CREATE TABLE enhanced_plugins (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        source_dir TEXT NOT NULL DEFAULT '',
        manifest TEXT NOT NULL DEFAULT '{}',
        publisher TEXT NOT NULL DEFAULT '',
        risk_score INTEGER NOT NULL DEFAULT 0,
        pending_approval TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE properties (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE plugin_property_assignments (
        plugin_key TEXT NOT NULL REFERENCES enhanced_plugins(key) ON DELETE CASCADE,
        property_id TEXT NOT NULL REFERENCES properties(id) ON DELETE CASCADE,
        enabled INTEGER NOT NULL DEFAULT 1,
        assigned_at REAL NOT NULL,
        PRIMARY KEY (plugin_key, property_id)
    );
    CREATE TABLE plugin_health_checks (
        id INTEGER PRIMARY KEY,
        plugin_key TEXT NOT NULL,
        checked_at REAL NOT NULL,
        ok INTEGER NOT NULL,
        latency_ms REAL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX plugin_health_checks_by_plugin ON plugin_health_checks (plugin_key, checked_at);
    CREATE TABLE plugin_events (
        id INTEGER PRIMARY KEY,
        plugin_key TEXT NOT NULL,
        at REAL NOT NULL,
        type TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        next_retry_at REAL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX plugin_events_by_plugin ON plugin_events (plugin_key, id);
    CREATE TABLE plugin_test_runs (
        id TEXT PRIMARY KEY,
        plugin_key TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        status TEXT NOT NULL,
        report TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX plugin_test_runs_by_plugin ON plugin_test_runs (plugin_key, started_at);
    CREATE TABLE plugin_state (
        plugin_key TEXT NOT NULL,
        property_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (plugin_key, property_id, key)
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        type TEXT NOT NULL,
        plugin TEXT NOT NULL DEFAULT '',
        property TEXT NOT NULL DEFAULT '',
        risk_score INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_log_by_time ON audit_log (at);
    CREATE TABLE operators (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        properties TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 2: install jobs (one per uploaded package) and the active one of each plugin
    """
    CREATE TABLE plugin_installs (
        id TEXT PRIMARY KEY,
        plugin_key TEXT NOT NULL,
        version TEXT NOT NULL,
        job TEXT NOT NULL,
        approval TEXT,
        package_digest TEXT NOT NULL,
        manifest TEXT NOT NULL DEFAULT '{}',
        file_hashes TEXT NOT NULL DEFAULT '{}',
        active INTEGER NOT NULL DEFAULT 0,
        last_run_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX plugin_installs_by_plugin ON plugin_installs (plugin_key, created_at);
    CREATE UNIQUE INDEX plugin_installs_one_active ON plugin_installs (plugin_key) WHERE active = 1;
    """,
    # 3: cameras of properties, Home Assistant keys
    """
    CREATE TABLE cameras (
        property_id TEXT NOT NULL REFERENCES properties(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '{"kind": "demo"}',
        has_audio INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (property_id, id)
    );
    CREATE TABLE ha_keys (
        id TEXT PRIMARY KEY,
        property_id TEXT NOT NULL REFERENCES properties(id) ON DELETE CASCADE,
        key_hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 4: plugin configuration (validated against the manifest's config_schema)
    """
    CREATE TABLE plugin_configs (
        plugin_key TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 5: an operator's optional request budget per Home Assistant key (NULL: the listener's)
    """
    ALTER TABLE ha_keys ADD COLUMN rate_limit_requests INTEGER;
    ALTER TABLE ha_keys ADD COLUMN rate_limit_window_s REAL;
    """,
    # 6: the hashes of an install's site/ (its requirements), recorded after pip ran (NULL:
    # installed before they were recorded)
    """
    ALTER TABLE plugin_installs ADD COLUMN site_hashes TEXT;
    """,
    # 7: the egress lane: an operator's grants to a plugin, and its refused requests
    """
    CREATE TABLE plugin_egress (
        plugin_key TEXT PRIMARY KEY REFERENCES enhanced_plugins(key) ON DELETE CASCADE,
        hosts TEXT NOT NULL DEFAULT '[]',
        refusals INTEGER NOT NULL DEFAULT 0,
        last_refused_at REAL,
        updated_at REAL,
        updated_by TEXT NOT NULL DEFAULT ''
    );
    """,
    # 8: console sign-in sessions: only a sha256 of the session id is kept (like tokens)
    """
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        csrf_secret TEXT NOT NULL
    );
    CREATE INDEX console_sessions_by_operator ON console_sessions (operator_id);
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
    """,
    # 9: a camera's credentials, sealed (cameras/credentials.py); never in `source`
    """
    ALTER TABLE cameras ADD COLUMN credentials TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; returns the resulting version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {current} is newer than this pentarun ({SCHEMA_VERSION})"
        )
    for version in range(current, SCHEMA_VERSION):
        conn.executescript(f"BEGIN;{MIGRATIONS[version]};PRAGMA user_version={version + 1};COMMIT;")
    return SCHEMA_VERSION
