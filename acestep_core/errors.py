"""The one exception type for problems a user can cause and fix.

Nodes turn it into a node error, the CLI into a one-line message; anything else that escapes is a bug.
"""


class AceStepError(Exception):
    """A user-fixable problem: the message names the input (file, field) and how to fix it."""
