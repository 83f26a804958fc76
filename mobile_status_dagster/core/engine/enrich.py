"""The enrichment loop: plan → check in batches → record → publish. No Dagster here.

Usable from a plain script::

    import asyncio
    from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
    from mobile_status_dagster.core.engine import EnrichmentJob, enrich, journal_dir_for
    from mobile_status_dagster.core.store import Partition, SourceTable, file_connect

    async def main() -> None:
        job = EnrichmentJob(source=SourceTable(), partitions=(Partition("set-a"),), run_id="r1")
        settings = ClientSettings(base_url=url, token=token)
        async with AsyncMobileStatusClient(settings) as client:
            report = await enrich(
                job,
                client=client,
                connect=file_connect("numbers.duckdb"),
                journal_dir=journal_dir_for("numbers.duckdb"),
            )
        report.raise_if_stopped()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from mobile_status_dagster.core.client.async_client import AsyncMobileStatusClient
from mobile_status_dagster.core.client.budget import ChargeBudget
from mobile_status_dagster.core.client.results import CheckResult
from mobile_status_dagster.core.engine.journal import Journal, Segment, leftover_segments
from mobile_status_dagster.core.engine.latency import LatencySample
from mobile_status_dagster.core.errors import (
    BudgetExhaustedError,
    DatabaseOpenError,
    EnrichmentStopped,
    ErrorCategory,
    FatalProviderError,
    MobileStatusError,
    SegmentRefusedError,
    StoreError,
    StoreWriteError,
    UnfoldableSegmentError,
)
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.backend import StateStore
from mobile_status_dagster.core.store.connection import Connect
from mobile_status_dagster.core.store.duckdb_store import DuckDBStore
from mobile_status_dagster.core.store.plan import RunPlan
from mobile_status_dagster.core.store.publish import PartitionOutcome
from mobile_status_dagster.core.store.record import FoldResult, iter_spool
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES, Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable

log = logging.getLogger("mobile_status_dagster.core.engine")

#: Fold the journal into the store after this many answers (and every
#: ``store.fold_every_s``).
FOLD_EVERY_ANSWERS = 5000
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class EnrichmentJob:
    """What to enrich, and the terms: freshness, price, budget.

    Args:
        source: the user's table of numbers.
        partitions: the partitions (sets or time windows) to enrich in this run.
        run_id: recorded with every call and answer (the Dagster run id under Dagster).
        freshness: how long answers are served from the cache.
        force_refresh: ask the provider again even for fresh numbers.
        unit_price: price of one billed call, recorded with each call.
        currency: currency of ``unit_price``.
        max_billed: stop before more than this many calls could be billed.
        tables: the tables the run reads and writes (``Tables(prefix)`` for a second
            instance in the same database).
    """

    source: SourceTable
    partitions: tuple[Partition, ...]
    run_id: str
    freshness: Freshness = field(default_factory=Freshness)
    force_refresh: bool = False
    unit_price: Decimal = Decimal(0)
    currency: str = "CNY"
    max_billed: int | None = None
    tables: Tables = DEFAULT_TABLES


@dataclass
class Progress:
    """A progress snapshot for logs."""

    done: int
    total: int
    billed: int
    calls_per_s: float


@dataclass
class EnrichmentReport:
    """What a run did: counts, money, per-partition outcomes, and why it stopped (if so)."""

    run_id: str
    plan: RunPlan
    sent: int = 0
    billed: int = 0
    possibly_billed: int = 0
    attempts: int = 0
    cost: Decimal = Decimal(0)
    currency: str = "CNY"
    check_s: float = 0.0
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    unresolved_by_error: collections.Counter[type[MobileStatusError]] = field(
        default_factory=collections.Counter
    )
    latencies: LatencySample = field(default_factory=LatencySample, repr=False)
    outcomes: list[PartitionOutcome] = field(default_factory=list)
    stop_reason: str | None = None
    stopped_by: type[MobileStatusError] | None = None
    """The error that stopped the run early (a fatal provider error, the budget), if any."""
    quarantined: list[QuarantinedSegment] = field(default_factory=list)
    """Journal segments of earlier runs that could not be folded, moved to the quarantine:
    their answers are not in the audit (see :attr:`warnings`)."""
    phase_s: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of each phase, in order: ``wait`` (for the provider turn),
    ``recover`` (folding dead runs' journals), ``plan``, ``check`` (calling the provider and
    folding its answers) and ``publish`` (a phase that did not run is absent)."""

    @property
    def warnings(self) -> list[str]:
        """What a successful run must still tell a person (quarantined journal segments)."""
        return [q.message for q in self.quarantined]

    @property
    def calls_per_s(self) -> float:
        """Numbers checked per second of checking."""
        return self.sent / self.check_s if self.check_s > 0 else 0.0

    @property
    def unfinished(self) -> list[PartitionOutcome]:
        """Partitions not published in this run."""
        return [o for o in self.outcomes if not o.published]

    @property
    def ok(self) -> bool:
        """Every partition was published."""
        return not self.unfinished and self.stop_reason is None

    def stop_message(self) -> str:
        """Why the run did not publish everything, and what to do."""
        parts = []
        if self.stop_reason:
            parts.append(self.stop_reason)
        empty = [o.set_id for o in self.unfinished if o.empty]
        if empty:
            parts.append(
                f"no rows in the source table for partition(s) {', '.join(map(repr, empty))}; "
                "check the set id (nothing was published or paid for them)"
            )
        unanswered = [o for o in self.unfinished if not o.empty]
        if unanswered:
            missing = sum(o.missing for o in unanswered)
            keys = ", ".join(o.set_id for o in unanswered[:10])
            more = "" if len(unanswered) <= 10 else f" and {len(unanswered) - 10} more"
            parts.append(
                f"{len(unanswered)} partition(s) not published ({keys}{more}): "
                f"{missing} number(s) still have no answer"
            )
        if self.unresolved_by_error:
            parts.append("numbers without an answer: " + _explain(self.unresolved_by_error))
        parts.extend(self.warnings)
        parts.append(
            f"{self.billed} billed answer(s) from this run are kept in the cache and the audit; "
            "a rerun pays only for what is missing"
        )
        return "; ".join(parts)

    @property
    def category(self) -> ErrorCategory | None:
        """What kind of failure this is (``None`` when every partition was published)."""
        if self.ok:
            return None
        return self.stopped_by.category if self.stopped_by is not None else "unfinished"

    def raise_if_stopped(self) -> None:
        """Raise :class:`EnrichmentStopped` unless every partition was published."""
        if not self.ok:
            raise EnrichmentStopped(self)


def _explain(errors: collections.Counter[type[MobileStatusError]]) -> str:
    """``3 × ConnectFailedError (the provider could not be reached; …)``, most common first."""
    return "; ".join(
        f"{count} × {error.__name__}" + (f" ({error.advice})" if error.advice else "")
        for error, count in errors.most_common()
    )


def journal_dir_for(database: str, tables: Tables = DEFAULT_TABLES) -> Path:
    """Where the answer journal of ``tables`` in ``database`` lives: next to the file.

    ``<database>.journal`` for the default tables, ``<database>.<prefix>journal`` for
    prefixed ones, so each instance folds only its own answers.
    """
    return Path(f"{database}.{tables.prefix}journal")


QUARANTINE = "quarantine"
"""The folder, inside the journal directory, of segments that cannot be folded."""


@dataclass(frozen=True)
class QuarantinedSegment:
    """A journal segment recovery could not fold, moved aside for a person to inspect."""

    segment: str
    """The segment's file name in the journal."""
    path: Path
    """Where it is now, in ``<journal>/quarantine/``."""
    reason: str
    """Why it could not be folded (the store's error, numbers masked)."""
    attempts: int
    billed: int

    @property
    def message(self) -> str:
        """What happened, what it means, and what to do."""
        return (
            f"journal segment {self.segment} cannot be folded into the store ({self.reason}); "
            f"moved it to {self.path}. Its {self.attempts} provider attempt(s), "
            f"{self.billed} of them billed, are NOT in the audit or the cache (a number "
            "answered only there is asked, and paid for, again when a run needs it). "
            "The file is kept: inspect it, fix "
            "what the store refused (e.g. the price in its first line), then move it back "
            f"into {self.path.parent.parent} for the next run to fold (or fold it by hand "
            "with mobile_status_dagster.core.store.record.fold_segment)"
        )


def recover_journal(
    connect: Connect,
    journal_dir: Path,
    tables: Tables = DEFAULT_TABLES,
    *,
    on_quarantine: Callable[[QuarantinedSegment], None] | None = None,
) -> int:
    """Fold segments left by runs that died into a DuckDB database; see
    :func:`recover_segments`."""
    return recover_segments(DuckDBStore(connect, journal_dir), tables, on_quarantine=on_quarantine)


def recover_segments(
    store: StateStore,
    tables: Tables = DEFAULT_TABLES,
    *,
    on_quarantine: Callable[[QuarantinedSegment], None] | None = None,
) -> int:
    """Fold segments left by runs that died into ``store``; return how many answers came back.

    A segment the store refuses to fold (an error of the segment's data, not of the disk,
    the server or the database) cannot poison every later run: it is moved to
    ``<journal_dir>/quarantine/``, the error is logged naming it (and passed to
    ``on_quarantine``), and recovery goes on; its answers are not counted.

    Raises:
        StoreError: the database cannot be opened or prepared, or it failed for a
            reason that is not the segment's (disk full, out of memory, …): the segment
            stays in the journal for the next run. :class:`UnfoldableSegmentError` when a
            segment that cannot be folded cannot be quarantined either.
    """
    journal_dir = store.journal_dir
    recovered = 0
    for segment in leftover_segments(journal_dir):
        try:
            result = _recover_segment(store, segment, tables)
        except BaseException:
            segment.release()
            raise
        if isinstance(result, QuarantinedSegment):
            segment.release()
            log.error("%s", result.message)
            if on_quarantine is not None:
                on_quarantine(result)
            continue
        segment.discard()
        recovered += result.answers
        if not result.already_folded:
            log.info("recovered %d answer(s) from journal %s", result.answers, segment.path.name)
    return recovered


def _recover_segment(
    store: StateStore, segment: Segment, tables: Tables
) -> FoldResult | QuarantinedSegment:
    """Fold ``segment``, or move it (still locked) to the quarantine if the store refuses it."""
    journal_dir = store.journal_dir
    name = segment.path.name
    kept = f"journal segment {name} is kept in {journal_dir} and folded by the next run"
    try:
        return store.fold(segment.path, tables=tables)
    except SegmentRefusedError as error:
        return _quarantine(segment, journal_dir, error.reason)
    except DatabaseOpenError as error:
        raise DatabaseOpenError(f"{error} (while recovering the journal; {kept})") from None
    except StoreWriteError as error:
        raise StoreWriteError(f"{error}; fix the cause and rerun: the {kept}") from None


def _quarantine(segment: Segment, journal_dir: Path, reason: str) -> QuarantinedSegment:
    """Move ``segment`` to ``<journal_dir>/quarantine/`` with a note saying why."""
    name = segment.path.name
    folder = journal_dir / QUARANTINE
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a directory")
        os.chmod(folder, 0o700)
        target = folder / name
        for copy in itertools.count(1):
            if not os.path.lexists(target):
                break
            target = folder / f"{name}.{copy}"
        os.rename(segment.path, target)
    except OSError as error:
        raise UnfoldableSegmentError(
            f"journal segment {name} cannot be folded into the store ({reason}) and could not "
            f"be moved to {folder} ({error}); it is kept in {journal_dir}: move it aside "
            "by hand and rerun"
        ) from None
    attempts, billed = _attempt_counts(target)
    quarantined = QuarantinedSegment(name, target, reason, attempts, billed)
    _write_note(quarantined, journal_dir)
    return quarantined


def _write_note(quarantined: QuarantinedSegment, journal_dir: Path) -> None:
    """``<segment>.reason.txt`` beside the quarantined file: when, why, what to do."""
    note = (
        f"{datetime.now(UTC).isoformat()}: {quarantined.message}\n"
        f"To fold it: fix it, then move it back as {journal_dir / quarantined.segment}\n"
    )
    path = f"{quarantined.path}.reason.txt"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, note.encode())
        finally:
            os.close(fd)
    except OSError as error:  # the log line says it all already
        log.warning("could not write %s (%s)", path, error)


def _attempt_counts(path: Path) -> tuple[int, int]:
    """How many provider attempts a segment holds, and how many were billed."""
    attempts = billed = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("m") is not None:
                    attempts += 1
                    billed += entry.get("b") is True
    except OSError:
        pass
    return attempts, billed


async def enrich(
    job: EnrichmentJob,
    *,
    client: AsyncMobileStatusClient,
    connect: Connect | None = None,
    journal_dir: Path | None = None,
    store: StateStore | None = None,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> EnrichmentReport:
    """Run ``job``: pay only for numbers not fresh in the cache, keep every answer.

    The state lives in ``store``, or (the embedded default) in the DuckDB database of
    ``connect`` with its journal in ``journal_dir``.

    Returns the report; a run that could not publish every partition has
    ``report.ok == False`` and says why in ``report.stop_message()``.
    """
    if store is None:
        if connect is None or journal_dir is None:
            raise TypeError("enrich() needs a store, or both connect and journal_dir")
        store = DuckDBStore(connect, journal_dir)
    journal_dir = store.journal_dir
    spool = journal_dir / f"{job.run_id}-{os.getpid()}{SPOOL_SUFFIX}"
    phases = _PhaseClock()
    async with store.turn(job.tables):
        phases.lap("wait")
        now = clock()
        _remove_dead_spools(journal_dir)
        quarantined: list[QuarantinedSegment] = []
        await asyncio.to_thread(
            recover_segments, store, job.tables, on_quarantine=quarantined.append
        )
        phases.lap("recover")
        plan = await asyncio.to_thread(
            store.plan,
            job.source,
            job.partitions,
            tables=job.tables,
            freshness=job.freshness,
            now=now,
            force_refresh=job.force_refresh,
            spool=spool,
        )
        report = EnrichmentReport(
            run_id=job.run_id,
            plan=plan,
            currency=job.currency,
            quarantined=quarantined,
            phase_s=phases.laps,
        )
        phases.lap("plan")
        try:
            if plan.to_send:
                await _check_all(job, report, client, store, spool, progress)
        finally:
            spool.unlink(missing_ok=True)
            phases.lap("check")
    try:
        report.outcomes = await asyncio.to_thread(
            store.publish,
            job.source,
            job.partitions,
            tables=job.tables,
            run_id=job.run_id,
            freshness=job.freshness,
            now=now,
            force_refresh=job.force_refresh,
        )
    except StoreWriteError as error:
        raise StoreWriteError(
            f"{error}; every answer of this run is already in the cache and the audit, so a "
            "rerun publishes without paying again"
        ) from None
    phases.lap("publish")
    report.cost = job.unit_price * report.billed
    return report


class _PhaseClock:
    """Seconds between successive :meth:`lap` calls, by phase name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self._last
        self._last = now


@dataclass
class _Stopping:
    """Why the check loop stops feeding new numbers, if it does (one place to look)."""

    reasons: list[str] = field(default_factory=list)
    cause: type[MobileStatusError] | None = None
    store_error: str | None = None
    """Set when the store or the journal refused a write: the run then fails, answers kept."""

    def stop(self, reason: str, cause: type[MobileStatusError]) -> None:
        """Stop feeding numbers; the first cause is the run's."""
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.cause = self.cause or cause

    def store_failed(self, reason: str) -> None:
        """A write was refused: stop, and fail the run once in-flight answers are journaled."""
        self.store_error = self.store_error or reason
        self.stop(reason, StoreWriteError)

    @property
    def stopped(self) -> bool:
        """Whether new numbers must not start."""
        return bool(self.reasons)


async def _check_all(
    job: EnrichmentJob,
    report: EnrichmentReport,
    client: AsyncMobileStatusClient,
    store: StateStore,
    spool: Path,
    progress: Callable[[Progress], None] | None,
) -> None:
    """Check the spooled numbers, journal each answer, fold the journal as it grows.

    Stops feeding new numbers on a fatal provider error, on the budget, or when the
    store refuses a write; requests in flight always finish and are journaled.
    """
    journal_dir = store.journal_dir
    journal = Journal(journal_dir, job.run_id, unit_price=job.unit_price, currency=job.currency)
    budget = ChargeBudget(job.max_billed) if job.max_billed is not None else None
    in_flight: dict[str, tuple[str, str]] = {}
    stopping = _Stopping()

    async def numbers() -> AsyncIterator[str]:
        for mobile, set_id, reason in iter_spool(spool):
            # The budget's only wait is in budget.reserve(), where each attempt starts.
            if stopping.stopped or (budget is not None and budget.exhausted):
                return
            in_flight[mobile] = (set_id, reason)
            yield mobile

    def persist(result: CheckResult) -> None:
        # In the worker, the moment the answer exists: a kill loses only what is in flight.
        journal.write(result, *in_flight[result.mobile])

    async def fold(segment: Segment) -> None:
        if stopping.store_error is not None:
            segment.release()
            return
        try:
            await asyncio.to_thread(_fold_and_discard, store, segment, job.tables)
        except StoreError as error:
            segment.release()
            stopping.store_failed(
                f"could not write answers to {store.name} ({type(error).__name__}: {error}); "
                f"they are kept in the journal {journal_dir} (segment {segment.path.name}) "
                "and the next run records them first: fix the cause and rerun. A segment "
                f"{store.name} still cannot fold then is moved to "
                f"{journal_dir / QUARANTINE} for you to inspect, and that run goes on "
                "without its answers"
            )

    folding: asyncio.Task[None] | None = None
    fold_turn = asyncio.Lock()
    check_started = last_fold = last_progress = time.perf_counter()

    async def start_fold() -> None:
        """Hand the journal's current segment to a fold, after the previous one ended."""
        nonlocal folding, last_fold
        async with fold_turn:
            if folding is not None:
                # Shielded: cancelling the timer must never cancel a fold under way.
                await asyncio.shield(folding)
            if journal.pending:
                folding = asyncio.create_task(fold(journal.rotate()))
                last_fold = time.perf_counter()

    async def fold_on_time() -> None:
        """Fold every ``fold_every_s`` even while no answer arrives (a slow provider), so
        an answer waits in the local journal at most that long."""
        while True:
            await asyncio.sleep(store.fold_every_s)
            if time.perf_counter() - last_fold >= store.fold_every_s:
                await start_fold()

    ticker = asyncio.create_task(fold_on_time())
    try:
        async for result in client.check_many(numbers(), on_result=persist, budget=budget):
            in_flight.pop(result.mobile)
            _count(report, result)
            now = time.perf_counter()
            if journal.pending >= FOLD_EVERY_ANSWERS or now - last_fold >= store.fold_every_s:
                await start_fold()
            if progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                report.check_s = now - check_started
                progress(
                    Progress(report.sent, report.plan.to_send, report.billed, report.calls_per_s)
                )
    except FatalProviderError as error:
        stopping.stop(str(error), type(error))
    except OSError as error:
        stopping.store_failed(f"could not write the answer journal in {journal_dir} ({error})")
    finally:
        report.check_s = time.perf_counter() - check_started
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        async with fold_turn:
            if folding is not None:
                await folding
        await fold(journal.current)
    if budget is not None and report.sent < report.plan.to_send and not stopping.stopped:
        stopping.stop(
            f"budget of {job.max_billed} billed call(s) reached; "
            f"{report.plan.to_send - report.sent} number(s) remain unchecked; "
            "rerun with a larger --max-billed (or max_billed run config) to continue",
            BudgetExhaustedError,
        )
    if stopping.stopped:
        report.stop_reason = "; ".join(stopping.reasons)
        report.stopped_by = stopping.cause
    if stopping.store_error is not None:
        raise StoreWriteError(stopping.store_error)


SPOOL_SUFFIX = ".plan.parquet"


def _remove_dead_spools(journal_dir: Path) -> None:
    """Delete plan spools (numbers, with their set ids) left by runs that were killed.

    A spool lives only while its run holds the provider turn, which the caller now
    holds: any spool (or its temporary file) still here belongs to a dead run.
    """
    for path in journal_dir.iterdir():
        name = path.name
        is_spool = name.endswith(SPOOL_SUFFIX) or (
            name.startswith(".") and SPOOL_SUFFIX in name and name.endswith(".tmp")
        )
        if is_spool and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def _fold_and_discard(store: StateStore, segment: Segment, tables: Tables) -> None:
    store.fold(segment.path, tables=tables)
    segment.discard()


def _count(report: EnrichmentReport, result: CheckResult) -> None:
    if not result.attempts:  # never sent (the budget was spent)
        return
    report.sent += 1
    report.attempts += len(result.attempts)
    report.billed += sum(1 for a in result.attempts if a.billed)
    report.possibly_billed += sum(1 for a in result.attempts if a.possibly_billed)
    for attempt in result.attempts:
        report.latencies.add(attempt.latency_ms)
    if result.status is not None:
        report.by_status[result.status.label] += 1
    # A fatal error is the run's stop reason already; list what else left numbers open.
    elif result.error is not None and not isinstance(result.error, FatalProviderError):
        report.unresolved_by_error[type(result.error)] += 1
