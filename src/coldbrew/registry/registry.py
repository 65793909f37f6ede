"""The registry: functions, their immutable versions, and the aliases pointing at them.

Every write runs in one transaction that first locks the function's row (``SELECT ... FOR
UPDATE`` on PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` already serialises writers), so
concurrent deploys of one function see each other's versions and never collide on a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coldbrew import errors
from coldbrew.registry import names
from coldbrew.registry.engine import UrlStore
from coldbrew.registry.models import AliasRow, FunctionRow, VersionRow, utcnow
from coldbrew.registry.records import (
    LATEST,
    AliasRecord,
    FunctionRecord,
    Resolution,
    VersionRecord,
)

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x636F6C64  # "cold": one key for every coldbrew registry migration


class Registry(UrlStore):
    """Functions, versions and aliases in SQLite (default) or PostgreSQL, chosen by URL."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url
        self._dialect = self._engine.dialect.name

    # -- lifecycle ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a no-op when already there."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._write_engine.begin() as conn:
            if self._dialect == "postgresql":
                # Several gateways may start at once; only one may run the DDL.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            config.attributes["connection"] = conn
            command.upgrade(config, "heads")

    # -- versions ----------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        *,
        content_sha256: str,
        config: dict[str, Any],
        manifest: dict[str, str],
        description: str = "",
    ) -> tuple[VersionRecord, bool]:
        """Record a deploy; return ``(version, created)`` and point ``latest`` at it.

        Deploys are content-hashed: a hash this function already has returns that version
        with ``created=False`` instead of making a duplicate."""
        names.check_function_name(name)
        names.check_content_sha256(content_sha256)
        config = names.as_json(config, "config")
        manifest = names.as_json(names.check_manifest(manifest), "manifest")
        with self._write() as session:
            fn = self._lock_or_create_function(session, name, description)
            row = session.scalars(
                select(VersionRow)
                .where(VersionRow.function_id == fn.id)
                .where(VersionRow.content_sha256 == content_sha256)
                .order_by(VersionRow.number.desc())
                .limit(1)
            ).first()
            created = row is None
            if row is None:
                fn.last_version += 1
                row = VersionRow(
                    function_id=fn.id,
                    number=fn.last_version,
                    content_sha256=content_sha256,
                    config=config,
                    manifest=manifest,
                    description=description,
                    created_at=utcnow(),
                )
                session.add(row)
                session.flush()
            self._upsert_alias(session, fn, LATEST, row.number, None)
            return _version_record(name, row), created

    def list_versions(self, name: str) -> list[VersionRecord]:
        """Every version of a function, ascending by number."""
        with self._read() as session:
            fn = _function(session, name)
            rows = session.scalars(
                select(VersionRow)
                .where(VersionRow.function_id == fn.id)
                .order_by(VersionRow.number)
            )
            return [_version_record(name, row) for row in rows]

    def get_version(self, name: str, number: int) -> VersionRecord:
        """One version by number (NotFound naming the function and number)."""
        with self._read() as session:
            fn = _function(session, name)
            return _version_record(name, _version(session, fn, number))

    def resolve(self, name: str, qualifier: str | None = None) -> VersionRecord:
        """The version an invocation of ``name[:qualifier]`` should run.

        ``None``, ``$LATEST`` and ``latest`` mean the ``latest`` alias; all digits mean a
        version number; anything else is an alias name (its main version, ignoring weights,
        which the gateway applies)."""
        number = names.version_qualifier(qualifier)
        with self._read() as session:
            fn = _function(session, name)
            if number is not None:
                return _version_record(name, _version(session, fn, number))
            alias_name = (
                LATEST if qualifier is None or qualifier in names.LATEST_QUALIFIERS else qualifier
            )
            alias = _alias(session, fn, alias_name)
            return _version_record(name, _version(session, fn, alias.version))

    def resolve_split(self, name: str, qualifier: str | None = None) -> Resolution:
        """Like :meth:`resolve`, with the alias's traffic split: the main version, the other
        versions with their fractions, and the sticky-key path (the data plane draws)."""
        number = names.version_qualifier(qualifier)
        with self._read() as session:
            fn = _function(session, name)
            if number is not None:
                return Resolution(_version_record(name, _version(session, fn, number)))
            alias_name = (
                LATEST if qualifier is None or qualifier in names.LATEST_QUALIFIERS else qualifier
            )
            alias = _alias(session, fn, alias_name)
            main = _version_record(name, _version(session, fn, alias.version))
            split = sorted((int(v), float(w)) for v, w in (alias.weights or {}).items() if w > 0)
            weighted = tuple(
                (fraction, _version_record(name, _version(session, fn, other)))
                for other, fraction in split
            )
            return Resolution(main, weighted, alias.sticky if weighted else None, alias_name)

    # -- functions ---------------------------------------------------------------------------

    def get_function(self, name: str) -> FunctionRecord:
        with self._read() as session:
            fn = _function(session, name)
            aliases = session.scalars(select(AliasRow).where(AliasRow.function_id == fn.id))
            return _function_record(fn, {a.name: a.version for a in aliases})

    def list_functions(self) -> list[FunctionRecord]:
        """Every function, sorted by name."""
        with self._read() as session:
            fns = session.scalars(select(FunctionRow).order_by(FunctionRow.name)).all()
            by_function: dict[int, dict[str, int]] = {fn.id: {} for fn in fns}
            for alias in session.scalars(select(AliasRow)):
                by_function.setdefault(alias.function_id, {})[alias.name] = alias.version
            return [_function_record(fn, by_function[fn.id]) for fn in fns]

    def delete_function(self, name: str) -> None:
        """Delete a function with its versions and aliases (the artifacts stay in the store,
        where other versions may share them)."""
        with self._write() as session:
            fn = _function(session, name, lock=True)
            # Explicit rather than relying on ON DELETE CASCADE, which SQLite only honours when
            # foreign keys are on for the connection.
            session.execute(delete(AliasRow).where(AliasRow.function_id == fn.id))
            session.execute(delete(VersionRow).where(VersionRow.function_id == fn.id))
            session.delete(fn)

    def referenced_artifacts(self) -> tuple[set[str], set[str]]:
        """What garbage collection must keep (store/gc.py): the sha256 of every blob some
        version's manifest names, and every version's content hash (its bundle folder)."""
        blobs: set[str] = set()
        bundles: set[str] = set()
        with self._read() as session:
            rows = session.execute(select(VersionRow.content_sha256, VersionRow.manifest))
            for content_sha256, manifest in rows:
                bundles.add(content_sha256)
                blobs.update(manifest.values())
        return blobs, bundles

    # -- aliases -----------------------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        weights: dict[int, float] | None = None,
        sticky: str | None = None,
        *,
        create_only: bool = False,
    ) -> AliasRecord:
        """Create or move an alias. ``weights`` sends a fraction of traffic to other versions;
        ``sticky`` (a JSON path like ``$.user.id``) keeps one caller on one of them.
        ``create_only`` refuses an alias that exists (Lambda's CreateAlias)."""
        names.check_alias_name(alias)
        names.check_version_number(version)
        clean = names.check_weights(version, weights)
        sticky = names.check_sticky_path(sticky)
        with self._write() as session:
            fn = _function(session, name, lock=True)
            for number in [version, *(clean or {})]:
                _version(session, fn, number)
            if create_only and _exists(session, fn, alias):
                raise errors.Conflict(f"alias '{alias}' of function '{name}' already exists")
            row = self._upsert_alias(session, fn, alias, version, clean, sticky)
            return _alias_record(name, row)

    def get_alias(self, name: str, alias: str) -> AliasRecord:
        with self._read() as session:
            return _alias_record(name, _alias(session, _function(session, name), alias))

    def list_aliases(self, name: str) -> list[AliasRecord]:
        """A function's aliases, sorted by name."""
        with self._read() as session:
            fn = _function(session, name)
            rows = session.scalars(
                select(AliasRow).where(AliasRow.function_id == fn.id).order_by(AliasRow.name)
            )
            return [_alias_record(name, row) for row in rows]

    def delete_alias(self, name: str, alias: str) -> None:
        """Delete an alias; ``latest`` is refused because every deploy relies on it."""
        if alias == LATEST:
            raise errors.Conflict(f"alias '{LATEST}' of function '{name}' cannot be deleted")
        with self._write() as session:
            fn = _function(session, name, lock=True)
            session.delete(_alias(session, fn, alias))
            fn.updated_at = utcnow()

    # -- internals ---------------------------------------------------------------------------

    def _lock_or_create_function(
        self, session: Session, name: str, description: str
    ) -> FunctionRow:
        """Insert the function if absent (tolerating a concurrent insert), then lock its row."""
        now = utcnow()
        values = {
            "name": name,
            "description": description,
            "last_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        if self._dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
            session.execute(
                insert(FunctionRow).values(**values).on_conflict_do_nothing(index_elements=["name"])
            )
        elif session.scalar(select(FunctionRow.id).where(FunctionRow.name == name)) is None:
            try:
                with session.begin_nested():
                    session.add(FunctionRow(**values))
            except IntegrityError:
                pass  # created concurrently; the locking read below finds it
        fn = _function(session, name, lock=True)
        fn.updated_at = now
        return fn

    def _upsert_alias(
        self,
        session: Session,
        fn: FunctionRow,
        alias: str,
        version: int,
        weights: dict[int, float] | None,
        sticky: str | None = None,
    ) -> AliasRow:
        """Point ``alias`` at ``version``; the caller holds the function's row lock."""
        now = utcnow()
        row = session.scalars(
            select(AliasRow).where(AliasRow.function_id == fn.id).where(AliasRow.name == alias)
        ).first()
        if row is None:
            row = AliasRow(function_id=fn.id, name=alias)
            session.add(row)
        row.version = version
        row.weights = {str(k): v for k, v in weights.items()} if weights else None
        row.sticky = sticky
        row.updated_at = now
        fn.updated_at = now
        session.flush()
        return row


def _function(session: Session, name: str, *, lock: bool = False) -> FunctionRow:
    query = select(FunctionRow).where(FunctionRow.name == name)
    if lock:
        query = query.with_for_update()
    fn = session.scalars(query).first()
    if fn is None:
        raise errors.NotFound(f"function '{name}' not found", function=name)
    return fn


def _version(session: Session, fn: FunctionRow, number: int) -> VersionRow:
    if not 1 <= number <= names.MAX_VERSION:  # would overflow the column: no such version
        raise errors.NotFound(
            f"version {number} of function '{fn.name}' not found", function=fn.name, version=number
        )
    row = session.scalars(
        select(VersionRow).where(VersionRow.function_id == fn.id).where(VersionRow.number == number)
    ).first()
    if row is None:
        raise errors.NotFound(
            f"version {number} of function '{fn.name}' not found", function=fn.name, version=number
        )
    return row


def _exists(session: Session, fn: FunctionRow, alias: str) -> bool:
    query = select(AliasRow.id).where(AliasRow.function_id == fn.id, AliasRow.name == alias)
    return session.scalars(query).first() is not None


def _alias(session: Session, fn: FunctionRow, alias: str) -> AliasRow:
    row = session.scalars(
        select(AliasRow).where(AliasRow.function_id == fn.id).where(AliasRow.name == alias)
    ).first()
    if row is None:
        raise errors.NotFound(
            f"alias '{alias}' of function '{fn.name}' not found", function=fn.name, alias=alias
        )
    return row


def _function_record(fn: FunctionRow, aliases: dict[str, int]) -> FunctionRecord:
    return FunctionRecord(
        name=fn.name,
        description=fn.description,
        created_at=fn.created_at,
        updated_at=fn.updated_at,
        aliases=dict(sorted(aliases.items())),
    )


def _version_record(name: str, row: VersionRow) -> VersionRecord:
    return VersionRecord(
        function_name=name,
        number=row.number,
        content_sha256=row.content_sha256,
        config=row.config,
        manifest=row.manifest,
        description=row.description,
        created_at=row.created_at,
    )


def _alias_record(name: str, row: AliasRow) -> AliasRecord:
    return AliasRecord(
        function_name=name,
        name=row.name,
        version=row.version,
        weights={int(k): float(v) for k, v in row.weights.items()} if row.weights else None,
        updated_at=row.updated_at,
        sticky=row.sticky,
    )
