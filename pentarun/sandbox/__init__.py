"""The worker sandbox: namespaces and mounts (bubblewrap), seccomp, cgroups (SPEC §6)."""
