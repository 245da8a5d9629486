"""flowlab's exception types (no imports: the CLI's start-up path uses this module)."""


class FlowlabInputError(ValueError):
    """Invalid user input; the message says what is wrong and what is allowed."""
