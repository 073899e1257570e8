"""The ASGI entry point for `billfold serve` (and any ASGI server): settings from the env."""

from billfold.app import create_app
from billfold.kit import runtime
from billfold.settings import Settings

app = create_app(Settings.from_env())
runtime.tune_gc_for_serving()  # a serving process only; tests keep CPython's defaults
