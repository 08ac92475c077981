"""User-facing errors.

Library code raises ``UserError`` for problems a user can cause and fix (missing or corrupt files,
wrong shapes, non-binary images, impossible sizes). The CLI turns it into one line and exit status 2.
"""


class UserError(ValueError):
    """A mistake in the user's input, reported as one clear line (CLI exit status 2)."""
