"""Errors a user can fix. The CLI turns these into a one-line message and exit code 2, no traceback."""


class UserError(Exception):
    """Bad input from the user: a path, a name, a value. The message must name the problem."""


class PluginImportError(UserError):
    """A registered plugin could not be imported; raised only when that plugin is requested."""
