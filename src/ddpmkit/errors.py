"""The one error type for problems with what the user asked for."""


class UserError(ValueError):
    """Bad input from the user: a wrong option, a missing file, data that cannot be read.

    The message is one line that names the problem and the fix; the CLI prints it
    and exits with code 2, with no traceback.
    """
