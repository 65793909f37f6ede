"""The registry: functions, versions and aliases (SQLAlchemy 2; SQLite default, PostgreSQL).

Build a ``Registry`` from a URL, call ``migrate()`` once at start-up, then ``create_version``
on deploy and ``resolve(name, qualifier)`` on invocation. Everything it returns is a frozen
record (``FunctionRecord``, ``VersionRecord``, ``AliasRecord``) detached from any session.
"""

from coldbrew.registry.records import LATEST, AliasRecord, FunctionRecord, VersionRecord
from coldbrew.registry.registry import Registry

__all__ = ["LATEST", "AliasRecord", "FunctionRecord", "Registry", "VersionRecord"]
