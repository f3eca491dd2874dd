"""prioroute's exceptions.

Every error prioroute raises is a :class:`PriorouteError`; each kind also subclasses the
standard exception a caller would naturally catch::

    PriorouteError
    ├── TierError (ValueError)              a tier definition is invalid
    ├── UnknownTierError (LookupError)      a registration names a tier that does not exist
    ├── RegistrationError (ValueError)      a task is registered in a contradictory or unusable way
    ├── ConfigConflictError (ValueError)    the app's own Celery settings contradict prioroute's
    │   └── QueueConflictError              a queue is declared with arguments prioroute cannot use
    ├── TopologyError (ValueError)          the broker cannot serve the asked-for queue layout
    ├── UnknownTaskError (LookupError)      a registered task name that Celery never registers
    └── MigrationError                      a migration cannot start (app, broker or queue)

:class:`PriorouteWarning` (a ``UserWarning``) flags what works but may surprise, such as a
countdown longer than the broker's visibility timeout.

Messages name the task, tier or setting at fault and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigConflictError",
    "MigrationError",
    "PriorouteError",
    "PriorouteWarning",
    "QueueConflictError",
    "RegistrationError",
    "TierError",
    "TopologyError",
    "UnknownTaskError",
    "UnknownTierError",
]


class PriorouteError(Exception):
    """Base class of every error prioroute raises."""

    def __str__(self) -> str:
        # LookupError subclasses would otherwise repr() their message (KeyError does).
        return str(self.args[0]) if self.args else ""


class TierError(PriorouteError, ValueError):
    """A :class:`~prioroute.Tier` was defined with an invalid name, urgency or policy."""


class UnknownTierError(PriorouteError, LookupError):
    """A registration names a tier that the registry does not define."""


class RegistrationError(PriorouteError, ValueError):
    """A task was registered twice with different tiers or options, or cannot be identified."""


class ConfigConflictError(PriorouteError, ValueError):
    """The Celery app already holds settings that contradict what prioroute must apply."""


class QueueConflictError(ConfigConflictError):
    """A queue is declared with arguments that differ from the ones prioroute needs."""


class UnknownTaskError(PriorouteError, LookupError):
    """Tasks registered with prioroute are not registered with the Celery app."""


class TopologyError(PriorouteError, ValueError):
    """The broker cannot keep tiers apart in the asked-for topology (e.g. a shared queue on
    a broker without message priority)."""


class MigrationError(PriorouteError):
    """A migration cannot start: the app is not configured by prioroute, a tier or queue is
    unknown, or a broker cannot be reached."""


class PriorouteWarning(UserWarning):
    """Something works but may not do what you expect; the message says what and why."""
