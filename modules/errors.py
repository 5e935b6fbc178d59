"""The one exception type for user mistakes: the CLI prints its message and exits with code 2."""


class ConfigError(ValueError):
    """A setting or an input that the user can fix; the message says what is wrong and how to fix it."""
