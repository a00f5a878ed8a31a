"""The one exception type for mistakes a user can make (bad path, bad JSONL line, bad config key).

Entry points catch it, print its message on one line (no traceback) and exit with status 2.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the file/line/key and says what to do."""

    exit_code = 2


class SettingError(UserError):
    """A setting that cannot work with this model or run (e.g. `grounding.sigma` above the grid's side,
    known once the first record is): it ends the run in one line, never a row's failure in a batch."""
