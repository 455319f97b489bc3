"""The one exception type for mistakes a user can make and fix.

The library raises `UserError` with a single line that says what is wrong and what to do;
the CLI turns it into a message on stderr and a non-zero exit, never a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""
