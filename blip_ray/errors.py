"""The one error type every layer raises for input that is the user's to fix."""


class UserError(ValueError):
    """Bad input that is the user's to fix (exit code 2); the message is one line naming the
    problem and the fix."""
