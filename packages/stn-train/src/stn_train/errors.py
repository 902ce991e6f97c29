"""The one exception type for errors a user can cause (bad files, bad arguments, bad data)."""


class TrainError(Exception):
    """A user-caused error, said in one sentence: what, which file or argument, what to do.

    The CLI prints the message on one line and exits with status 2, without a traceback.
    """
