"""Apply a pipeline's Feast repo and materialize its offline data into Redis.

Both go through the Feast SDK (``FeatureStore.apply`` and ``FeatureStore.materialize``),
so the online store holds exactly what Feast itself would write. Materialization runs
view by view in time chunks of at most ``chunk_rows`` offline rows each: Feast's file
offline store loads a whole window into pandas before writing, so bounding the window
bounds memory whatever the data size. Chunks go in time order, so the newest value of an
entity is written last (Feast's Redis writer also refuses to overwrite newer with older).
"""

from __future__ import annotations

import contextlib
import io
import logging
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from features.exceptions import FeatureDataError, FeatureRepoError, FeatureStoreUnavailable
from features.repo import load_definitions, open_store, project_name

__all__ = [
    "ApplyResult",
    "MaterializeResult",
    "ViewStats",
    "apply_repo",
    "materialize_repo",
    "peak_rss_mib",
]

log = logging.getLogger("streamscore.features.materialize")


@dataclass
class ApplyResult:
    """What ``apply_repo`` registered."""

    project: str
    entities: list[str]
    feature_views: list[str]
    data_sources: list[str]
    seconds: float


@dataclass
class ViewStats:
    """Rows one view materialized, and how long it took."""

    name: str
    rows: int
    chunks: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        """Throughput of this view's materialization."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class MaterializeResult:
    """Totals of one ``materialize_repo`` run."""

    project: str
    start: datetime
    end: datetime
    views: list[ViewStats] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def rows(self) -> int:
        """Offline rows inside the window, over all views."""
        return sum(v.rows for v in self.views)

    @property
    def rows_per_s(self) -> float:
        """Overall throughput (rows / wall seconds)."""
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def apply_repo(repo: str | Path, redis_url: str | None = None) -> ApplyResult:
    """Register the repo's entities, sources and views (``feast apply`` through the SDK)."""
    started = time.perf_counter()
    defs = load_definitions(repo)
    views = list(defs.FEATURE_VIEWS)
    sources: list[Any] = []
    for view in views:
        for src in (view.stream_source, view.batch_source):
            if src is not None and all(src is not s for s in sources):
                sources.append(src)
    store = open_store(repo, redis_url)
    with _feast_errors(), _quiet():
        store.apply([*defs.ENTITIES, *sources, *views])
    return ApplyResult(
        project=store.project,
        entities=[e.name for e in defs.ENTITIES],
        feature_views=[v.name for v in views],
        data_sources=[s.name for s in sources],
        seconds=time.perf_counter() - started,
    )


def materialize_repo(
    repo: str | Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    days: float | None = None,
    views: Sequence[str] | None = None,
    chunk_rows: int = 50_000,
    redis_url: str | None = None,
    progress: bool = True,
) -> MaterializeResult:
    """Materialize offline rows with timestamps in ``[start, end)`` into the online store.

    ``end`` defaults to now; ``start`` to ``end - days`` when ``days`` is given, else to
    the oldest offline row. ``views`` limits the run to some views (default: all). The
    repo must have been applied (see :func:`apply_repo`).
    """
    if chunk_rows < 1:
        raise FeatureDataError("chunk_rows must be positive")
    end = _aware(end) if end is not None else datetime.now(UTC)
    defs = load_definitions(repo)
    all_views = {v.name: v for v in defs.FEATURE_VIEWS}
    unknown = sorted(set(views or ()) - set(all_views))
    if unknown:
        raise FeatureDataError(f"unknown feature views {unknown}; repo has {sorted(all_views)}")
    chosen = [all_views[name] for name in (views or all_views)]
    stamps = {v.name: _offline_timestamps(v) for v in chosen}
    if start is None and days is not None:
        start = end - timedelta(days=days)
    if start is None:
        oldest = [float(s.min()) for s in stamps.values() if s.size]
        start = datetime.fromtimestamp(np.floor(min(oldest, default=end.timestamp())), UTC)
    start = _aware(start)
    if start >= end:
        raise FeatureDataError(f"empty materialization window: {start} >= {end}")

    plans = {
        name: _chunk_edges(ts, start.timestamp(), end.timestamp(), chunk_rows)
        for name, ts in stamps.items()
    }
    result = MaterializeResult(project=project_name(repo), start=start, end=end)
    store = open_store(repo, redis_url)
    total_rows = sum(rows for plan in plans.values() for _, _, rows in plan)
    started = time.perf_counter()
    with _bar(progress, total_rows) as advance, _feast_errors():
        for view in chosen:
            view_started = time.perf_counter()
            plan = plans[view.name]
            for lo, hi, rows in plan:
                with _quiet():
                    store.materialize(
                        start_date=datetime.fromtimestamp(lo, UTC),
                        end_date=datetime.fromtimestamp(hi, UTC),
                        feature_views=[view.name],
                    )
                advance(view.name, rows)
            result.views.append(
                ViewStats(
                    name=view.name,
                    rows=sum(r for _, _, r in plan),
                    chunks=len(plan),
                    seconds=time.perf_counter() - view_started,
                )
            )
    result.seconds = time.perf_counter() - started
    result.peak_rss_mib = peak_rss_mib()
    return result


def _offline_timestamps(view: Any) -> np.ndarray:
    """Epoch seconds of every row of the view's offline parquet file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = view.batch_source
    path = Path(getattr(source, "path", "") or "")
    if not path.is_file():
        raise FeatureDataError(
            f"offline data of view {view.name!r} not found at {path} "
            "(run 'streamscore features generate' first)"
        )
    column = source.timestamp_field or "event_timestamp"
    table = pq.read_table(path, columns=[column])
    micros = pc.cast(pc.cast(table.column(column), pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6


def _chunk_edges(
    ts: np.ndarray, start: float, end: float, chunk_rows: int
) -> list[tuple[float, float, int]]:
    """Split ``[start, end)`` into windows holding at most ``chunk_rows`` rows each.

    Edges fall between distinct timestamps, so a window never splits rows sharing one.
    """
    inside = np.sort(ts[(ts >= start) & (ts < end)])
    if inside.size <= chunk_rows:
        return [(start, end, int(inside.size))]
    edges = [start]
    i = 0
    while inside.size - i > chunk_rows:
        j = i + chunk_rows
        # move the cut back to the first row of its timestamp run
        j = int(np.searchsorted(inside, inside[j], side="left"))
        if j <= i:  # one timestamp holds more than chunk_rows rows: keep the run whole
            j = int(np.searchsorted(inside, inside[i], side="right"))
        if j >= inside.size:
            break
        edges.append(float(inside[j]))
        i = j
    edges.append(end)
    counts = np.searchsorted(inside, edges[1:], side="left") - np.searchsorted(
        inside, edges[:-1], side="left"
    )
    return [(lo, hi, int(n)) for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Feast's own prints and tqdm bars: our summary (and bar) say it better."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


@contextlib.contextmanager
def _feast_errors() -> Iterator[None]:
    """Translate Redis connection failures and unapplied views into one clear error."""
    import redis
    from feast.errors import FeatureViewNotFoundException

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise FeatureStoreUnavailable(f"online store (Redis) unreachable: {exc}") from exc
    except FeatureViewNotFoundException as exc:
        raise FeatureRepoError(
            f"{exc}; apply the repo first ('streamscore features apply' or --apply)"
        ) from exc


@contextlib.contextmanager
def _bar(enabled: bool, total: int) -> Iterator[Any]:
    """A rich progress bar over rows; yields ``advance(view_name, rows)``."""
    if not enabled:
        yield lambda _name, _rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]materialize[/] {task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
    ) as bar:
        task = bar.add_task("", total=max(total, 1), rate="")

        def advance(name: str, rows: int) -> None:
            done = bar.tasks[0].completed + rows
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            bar.update(task, advance=rows, description=name, rate=rate)

        yield advance
