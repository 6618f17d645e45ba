"""The one base class of failures a user can fix: bad input, a missing or outdated artifact, too
little data, an unknown setting. The ``tworec`` command reports them in one line (the message says
what to change) with exit code 2, never with a traceback."""


class UserError(Exception):
    pass
