"""The one error type raised by checkpoint reading, mapping and writing.

A `CheckpointError` is a `ValueError` whose message is ONE line naming the file
or key, the offending value, what was expected and how to fix it, so that the
`weights_convert.py` CLI can print it as-is and exit non-zero without a traceback.
"""


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be read, mapped or written as asked."""
