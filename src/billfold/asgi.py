"""The ASGI entry point for `billfold serve` (and any ASGI server): settings from the env."""

from billfold.app import create_app
from billfold.kit import logs, runtime
from billfold.settings import Settings

settings = Settings.from_env()
# Each server process logs JSON lines (decision 0027): with several workers, this module
# is what each of them imports.
logs.configure(settings.log_format, settings.log_level)
app = create_app(settings)
runtime.tune_gc_for_serving()  # a serving process only; tests keep CPython's defaults
