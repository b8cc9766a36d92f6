"""The one error the dev cluster raises: its message is a sentence for the user, no traceback."""


class DevClusterError(RuntimeError):
    """Something the user can act on: a missing toolchain, a failed build, a component down."""
