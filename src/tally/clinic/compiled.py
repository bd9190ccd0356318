"""Fixed-shape statements of the hot paths, compiled once per database connection.

The ORM turns a QuerySet into SQL again on every execution: resolving the filters, the
joins, the select list, the ordering, quoting every name. For a check-in that compiling
was about half of its CPU (`bench/checkin_cost.py --profile`), for statements whose text
never changes, only their arguments.

`Compiled(build)` is an ordinary QuerySet, built by `build(*args)`. On its first use on a
database connection it is built with stand-in arguments and compiled by the ORM; every
later call on that connection runs the same SQL with its own arguments, and turns the rows
into model instances (select_related included) or value rows exactly as the ORM's iterables
do, with the same database converters. The QuerySet stays the one description of the
statement (its fields, joins, `select_for_update`, ordering, limit): this only saves
compiling it again. Statements run through `connection.cursor()`, so they are counted,
logged and wrapped (`execute_wrapper`) like the ORM's own.

Arguments are ints or strs (ids, keys, hashes): the only kinds the ORM hands to the
database as they are, which is what lets a stand-in be found among the compiled parameters.
A stand-in that is not found exactly once among them (a lookup that transforms its value,
say `__icontains`) refuses to compile, so a statement can never run with the wrong value.

`insert(obj)` and `update_fields(obj, names)` are `obj.save(force_insert=True)` and
`obj.save(update_fields=names)` for plain values, with the statement's text built once per
connection from the model's fields; values are prepared per call as `save()` prepares them
(`pre_save`, `get_db_prep_save`). They send no model signals: use them only for models
that have no receivers (Staff has one; it is not written here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet
from django.db.models.query import ModelIterable, ValuesListIterable, get_related_populators
from django.db.models.sql import UpdateQuery
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError

_CACHE = "_tally_compiled"
_INT_STANDIN = 1_987_650_000  # within a 32-bit integer column's range, never a real id here
_STR_STANDIN = "\ue000tally-compiled-argument-{}\ue000"


def _connection() -> tuple[BaseDatabaseWrapper, dict[Any, Any]]:
    """This thread's connection wrapper and the statements compiled on it. The cache is kept
    in the wrapper's own __dict__: the `connection` proxy forwards attribute access to the
    thread's wrapper, but its own __dict__ would be shared by every thread. The wrapper
    outlives reconnects (the SQL text does not depend on the session), so "once per
    connection" means once per thread's wrapper."""
    conn = connections[DEFAULT_DB_ALIAS]
    cache = conn.__dict__.get(_CACHE)
    if cache is None:
        cache = conn.__dict__[_CACHE] = {}
    return conn, cache


def _standins(kinds: Sequence[type]) -> list[Any]:
    standins: list[Any] = []
    for i, kind in enumerate(kinds):
        if kind is int:
            standins.append(_INT_STANDIN + i)
        elif kind is str:
            standins.append(_STR_STANDIN.format(i))
        else:
            raise TypeError(f"a compiled statement takes int or str arguments, not {kind.__name__}")
    return standins


def _slots(params: Sequence[Any], standins: list[Any]) -> list[tuple[bool, Any, Any]]:
    """For each compiled parameter: (True, index of the argument, the type the ORM gave it)
    or (False, a constant, None). PostgreSQL's backend wraps some integers (psycopg's Int4),
    a subclass of int: the same wrapper is given to each call's argument."""
    slots: list[tuple[bool, Any, Any]] = []
    found = [0] * len(standins)
    for param in params:
        index = next((i for i, s in enumerate(standins)
                      if isinstance(param, type(s)) and not isinstance(param, bool) and param == s), None)
        if index is None:
            slots.append((False, param, None))
        else:
            found[index] += 1
            slots.append((True, index, type(param)))
    if any(count != 1 for count in found):
        raise ValueError(f"each argument must appear once among the compiled parameters; found {found}")
    return slots


def _bind(slots: list[tuple[bool, Any, Any]], args: Sequence[Any]) -> list[Any]:
    if len(args) != max((value + 1 for is_arg, value, _ in slots if is_arg), default=0):
        raise TypeError("wrong number of arguments for this compiled statement")
    return [(kind(args[value]) if kind is not type(args[value]) else args[value]) if is_arg else value
            for is_arg, value, kind in slots]


class _Plan:
    def __init__(self, queryset: QuerySet, compiler: SQLCompiler, sql: str, slots: list[tuple[bool, Any, Any]]):
        self.sql, self.slots, self.db = sql, slots, queryset.db
        self.queried: type[Model] = queryset.model  # for get()'s DoesNotExist, values too
        # The ORM refuses a FOR UPDATE outside a transaction when it compiles; compiled once,
        # the refusal is made on every run instead (_rows), or a later run would lock nothing.
        self.for_update = bool(queryset.query.select_for_update)
        db = self.db
        self.compiler = compiler
        select = compiler.select
        self.converters = compiler.get_converters([s[0] for s in select[0:compiler.col_count]])
        klass_info = compiler.klass_info
        self.model: type[Model] | None = None
        if queryset._iterable_class is ValuesListIterable:
            if queryset._fields is None or queryset.query.extra_select or queryset.query.annotation_select:
                raise ValueError("a compiled values_list() names plain fields only")
        elif queryset._iterable_class is not ModelIterable:
            raise ValueError("a compiled QuerySet gives instances or values_list() rows (not flat, not dicts)")
        else:
            self.model = klass_info["model"]
            fields = klass_info["select_fields"]
            self.start, self.end = fields[0], fields[-1] + 1
            self.init_list = [f[0].target.attname for f in select[self.start:self.end]]
            self.populators = get_related_populators(klass_info, select, db)
            self.annotations = dict(compiler.annotation_col_map or {})


class Compiled:
    """A SELECT built by `build(*args)` and compiled once per connection (module docstring).
    `kinds`: the type of each argument, int or str."""

    def __init__(self, build: Callable[..., QuerySet], *kinds: type):
        self.build, self.kinds = build, kinds

    def _plan(self) -> tuple[BaseDatabaseWrapper, _Plan]:
        conn, cache = _connection()
        plan = cache.get(self)
        if plan is None:
            standins = _standins(self.kinds)
            queryset = self.build(*standins)
            if queryset.db != conn.alias:
                raise ValueError("a compiled statement runs on the default database")
            compiler = queryset.query.get_compiler(using=queryset.db)
            sql, params = compiler.as_sql()
            plan = cache[self] = _Plan(queryset, compiler, sql, _slots(params, standins))
        return conn, plan

    @staticmethod
    def _rows(conn: BaseDatabaseWrapper, plan: _Plan, args: Sequence[Any]) -> list[list[Any]]:
        if plan.for_update and conn.features.has_select_for_update and conn.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        with conn.cursor() as cursor:
            cursor.execute(plan.sql, _bind(plan.slots, args))
            rows = cursor.fetchall()
        if plan.converters:
            return list(plan.compiler.apply_converters(rows, plan.converters))
        return [list(row) for row in rows]

    def all(self, *args: Any) -> list[Any]:
        """Model instances, or for a values_list QuerySet its rows as tuples."""
        conn, plan = self._plan()
        rows = self._rows(conn, plan, args)
        if plan.model is None:
            return [tuple(row) for row in rows]
        objects = []
        for row in rows:
            obj = plan.model.from_db(plan.db, plan.init_list, row[plan.start:plan.end])
            for populator in plan.populators:
                populator.populate(row, obj)
            for name, position in plan.annotations.items():
                setattr(obj, name, row[position])
            objects.append(obj)
        return objects

    def first(self, *args: Any) -> Any:
        found = self.all(*args)
        return found[0] if found else None

    def get(self, *args: Any) -> Any:
        """The one row, as QuerySet.get(): DoesNotExist / MultipleObjectsReturned otherwise
        (the QuerySet should be sliced [:2], so that a second row is seen but not more)."""
        found = self.all(*args)
        model = self._plan()[1].queried
        if len(found) == 1:
            return found[0]
        if not found:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        raise model.MultipleObjectsReturned(f"get() returned more than one {model._meta.object_name}.")


class CompiledUpdate:
    """An UPDATE: `build(*args)` returns (QuerySet, values) as for `QuerySet.update(**values)`;
    compiled once per connection; returns the number of rows updated."""

    def __init__(self, build: Callable[..., tuple[QuerySet, dict[str, Any]]], *kinds: type):
        self.build, self.kinds = build, kinds

    def __call__(self, *args: Any) -> int:
        conn, cache = _connection()
        plan = cache.get(self)
        if plan is None:
            standins = _standins(self.kinds)
            queryset, values = self.build(*standins)
            query = queryset.query.chain(UpdateQuery)
            query.add_update_values(values)
            sql, params = query.get_compiler(using=queryset.db).as_sql()
            plan = cache[self] = (sql, _slots(params, standins))
        sql, slots = plan
        with conn.cursor() as cursor:
            cursor.execute(sql, _bind(slots, args))
            return cursor.rowcount


def _plain(value: Any) -> bool:
    return not hasattr(value, "resolve_expression") and not hasattr(value, "as_sql")


def _prepared(obj: Model, fields: Sequence[Any], conn: BaseDatabaseWrapper, *, adding: bool) -> list[Any]:
    """The fields' values as save() prepares them (pre_save, then get_db_prep_save)."""
    params = []
    for field in fields:
        value = field.pre_save(obj, adding)
        if not _plain(value):
            raise ValueError(f"{obj._meta.label}.{field.name}: an expression; use save()")
        params.append(field.get_db_prep_save(value, conn))
    return params


def insert(obj: Model) -> None:
    """`obj.save(force_insert=True)` for a new row with an automatic id (module docstring)."""
    meta = obj._meta
    if not obj._state.adding or obj.pk is not None:
        raise ValueError("insert() writes new rows with an automatic id")
    obj._prepare_related_fields_for_save(operation_name="save")
    conn, cache = _connection()
    key = ("insert", type(obj))
    plan = cache.get(key)
    if plan is None:
        fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]
        if any(hasattr(f, "get_placeholder") for f in fields):
            raise ValueError(f"{meta.label} has a field with its own placeholder; use save()")
        qn = conn.ops.quote_name
        returning = meta.db_returning_fields
        sql = "INSERT INTO {} ({}) VALUES ({})".format(
            qn(meta.db_table), ", ".join(qn(f.column) for f in fields), ", ".join(["%s"] * len(fields)))
        returning_sql, returning_params = "", ()
        if conn.features.can_return_columns_from_insert:
            returning_sql, returning_params = conn.ops.return_insert_columns(returning)
        if returning_sql:
            sql = f"{sql} {returning_sql}"
        compiler = SQLCompiler(None, conn, None)  # only for its converters
        cols = [f.get_col(meta.db_table) for f in returning]
        converters = list(compiler.get_converters(cols).items())
        plan = cache[key] = (sql, fields, returning, tuple(returning_params), bool(returning_sql), converters)
    sql, fields, returning, returning_params, returns, converters = plan
    params = _prepared(obj, fields, conn, adding=True)
    with conn.cursor() as cursor:
        cursor.execute(sql, params + list(returning_params))
        if returns:
            row = list(conn.ops.fetch_returned_insert_columns(cursor, returning_params))
        else:
            row = [conn.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)]
    for position, (convs, expression) in converters:
        for converter in convs:
            row[position] = converter(row[position], expression, conn)
    for field, value in zip(returning, row, strict=True):
        setattr(obj, field.attname, value)
    obj._state.adding = False
    obj._state.db = conn.alias


def update_fields(obj: Model, names: Sequence[str]) -> None:
    """`obj.save(update_fields=names)` for plain values (module docstring)."""
    meta = obj._meta
    conn, cache = _connection()
    key = ("update", type(obj), tuple(names))
    plan = cache.get(key)
    if plan is None:
        fields = [meta.get_field(name) for name in names]
        if any(not f.concrete or f.primary_key or hasattr(f, "get_placeholder") for f in fields):
            raise ValueError(f"{meta.label}: update_fields() writes plain columns only; use save()")
        qn = conn.ops.quote_name
        table = qn(meta.db_table)
        sql = "UPDATE {} SET {} WHERE {}.{} = %s".format(
            table, ", ".join(f"{qn(f.column)} = %s" for f in fields), table, qn(meta.pk.column))
        plan = cache[key] = (sql, fields)
    sql, fields = plan
    params = _prepared(obj, fields, conn, adding=False)
    params.append(meta.pk.get_db_prep_value(obj.pk, conn))
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.rowcount != 1:
            raise DatabaseError("Save with update_fields did not affect any rows.")
