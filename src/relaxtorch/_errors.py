"""The CLI's user-error type, in its own module so ``python -m relaxtorch.cli`` and the
``relaxtorch`` script catch the same class."""


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""
