"""One error type for everything a user can get wrong, always carrying the fix."""


class EdgepruneError(Exception):
    """A problem with the user's input or environment: `problem` says what, `fix` says what to do."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}" + (f" — fix: {fix}" if fix else ""))
