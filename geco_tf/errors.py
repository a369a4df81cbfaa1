"""Errors a user can fix.

Library code raises :class:`UserError` for bad input (a missing file, an unknown target, a
dataset that cannot be trained on). The CLI turns it into one line on stderr and exit code 2;
anything else is an internal error (exit code 1).
"""


class UserError(Exception):
    """Bad input from the user: the message names the file or option and says what is wrong."""
