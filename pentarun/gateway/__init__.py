"""HTTP surfaces: the admin API and the plugin listeners."""
