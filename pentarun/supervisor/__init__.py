"""Supervision: the pure policy, the worker process, and the actor that drives them."""
