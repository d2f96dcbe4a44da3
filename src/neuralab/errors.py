"""The errors neuralab reports to its users, as opposed to bugs.

A `UserError` is a mistake the user can fix: a setting, a file, a name. Its message names the
thing, what was expected, what was found and the fix. The command line prints it as one line
(`neuralab VERB: error: MESSAGE`, exit status 2); any other exception is a bug in neuralab, shown
with its traceback and a request to report it (exit status 1).

Every specific error also keeps the built-in base its callers already catch, so that making it
a `UserError` changes no `except` clause anywhere:

    ConfigError(UserError, ValueError)          config.py: a recipe, flag or override is wrong
    DataError(UserError, ValueError)            data/dataset.py: data missing, unreadable, malformed
    CheckpointError(UserError, ValueError)      checkpoint/format.py: not a (complete) checkpoint
    ExportError(UserError, ValueError)          inference/exporters.py: cannot export, or no match
    UnknownNameError(UserError, KeyError)       registry.py: a name no registry holds
    UnknownArgumentError(UserError, TypeError)  registry.py: an argument a factory does not take
    TrainingStopped(UserError, RuntimeError)    api.py: training stopped (e.g. the loss became NaN)

Plain `ValueError`/`TypeError` are left for internal checks (a caller passing the wrong thing):
the command line shows those with their traceback, as bugs.

Example:
    >>> from neuralab.config import ConfigError
    >>> issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message says what to change. No traceback is shown.

    Subclass it together with the built-in exception that callers catch today (e.g.
    `class ConfigError(UserError, ValueError)`); raise the subclass, not `UserError` itself,
    so that Python callers can tell a bad setting from bad data.
    """


class ConfigError(UserError, ValueError):
    """A recipe, flag, override or setting is wrong; the message names the field and the fix.
    Defined here beside UserError, so that modules which only raise it need not import the
    config schema; `neuralab.config` re-exports it."""
