"""What plugin workers import — and the only part of pentarun they may import.

from pentarun.sdk import Plugin, Context, Response, Error
"""

from .context import Context, CoreClient, PluginStore
from .plugin import Plugin
from .types import Error, Response, Stream

__all__ = ["Context", "CoreClient", "Error", "Plugin", "PluginStore", "Response", "Stream"]
