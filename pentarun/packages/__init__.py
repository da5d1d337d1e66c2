"""Plugin packages: reading, validation, the install pipeline, installation and test gates."""
