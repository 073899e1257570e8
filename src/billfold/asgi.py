"""The ASGI entry point for `billfold serve` (and any ASGI server): settings from the env."""

from billfold.app import create_app
from billfold.settings import Settings

app = create_app(Settings.from_env())
