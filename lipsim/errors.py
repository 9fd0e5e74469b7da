"""The one base class of expected errors (bad input, bad data, a failed download).

The dispatcher (`python -m lipsim`) prints an expected error as one `error:` line naming
the file, option or URL and exits 1; anything else is a bug and keeps its traceback.
Domain error classes (DownloadError, NightFormatError, ...) derive from LipSimError.
"""

from __future__ import annotations


class LipSimError(Exception):
    """An expected failure: the message names what is wrong (file, row, key, URL, option)."""
