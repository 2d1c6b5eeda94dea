"""The console's pages and actions. Every read and change is one call on `Beat`, as the CLI
makes it, so a running leader applies a change within a second (its watcher sees the
database's change counter). Changes are POSTs that answer with a redirect (303) to the
page that shows the result; bad input re-renders the page with the CLI's messages next
to their fields (400) and changes nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import available_timezones

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from jinja2 import StrictUndefined
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.wrappers import Response

from beatd.api import Beat
from beatd.cli.config_cmds import parse_instant
from beatd.cli.main import one_line
from beatd.cli.output import relative, table_time
from beatd.errors import AlreadyExists, BeatdError, ConfigError, Conflict, NotFound
from beatd.model import STATES, Fire, Schedule, ScheduleFilter
from beatd.upcoming import upcoming
from beatd.views import ScheduleInfo
from beatd.web import forms, guard, views

log = logging.getLogger("beatd.web")

PAGE_SIZE = 50  # schedules per page of the list
NEXT_FIRES = 10  # upcoming fires on a schedule's page
PREVIEW_FIRES = 5  # fires the form previews
HISTORY_ROWS = 50  # history rows on a schedule's page (?limit= up to MAX_HISTORY_ROWS)
MAX_HISTORY_ROWS = 1000
SOURCES = ("file", "api")
STATUS_OF = {NotFound: 404, Conflict: 409, ConfigError: 400}


@dataclass(frozen=True, slots=True)
class Console:
    """What the views share: the API, the token (if any) and what the form lists."""

    beat: Beat
    token: str | None
    form: Mapping[str, Any]
    status_lock: threading.Lock = field(default_factory=threading.Lock)  # one broker link


def create_app(beat: Beat, token: str | None = None) -> Flask:
    """The console over `beat`; with `token`, every page needs it (see guard.py)."""
    app = Flask(__name__)
    guard.install(app, token)
    app.extensions["beatd"] = Console(
        beat,
        token,
        {
            "fields": forms.FIELDS,
            "spec_hints": forms.SPEC_HINTS,
            "zones": sorted(available_timezones()),
            "default_zone": beat.settings.timezone.key,
        },
    )
    app.jinja_env.undefined = StrictUndefined
    app.jinja_env.filters.update(
        utc=lambda at: table_time(at.astimezone(UTC)) if at else "-",
        local=lambda at: table_time(at) if at else "-",
        ago=lambda at: relative(at, beat.clock.now()) if at else "",
        words=views.words,
        outcome=views.outcome,
    )
    app.before_request(_start_clock)
    app.after_request(_server_timing)
    app.register_error_handler(BeatdError, _beatd_error)
    app.register_error_handler(HTTPException, _http_error)
    for path, view, methods in (
        ("/", index, ["GET"]),
        ("/schedules", schedules, ["GET"]),
        ("/schedule", schedule, ["GET"]),
        ("/cluster", cluster, ["GET"]),
        ("/schedule/pause", pause, ["POST"]),
        ("/schedule/resume", resume, ["POST"]),
        ("/schedule/trigger", trigger, ["POST"]),
        ("/schedule/backfill", backfill, ["POST"]),
        ("/schedule/remove", remove, ["POST"]),
        ("/add", add, ["GET", "POST"]),
        ("/edit", edit, ["GET", "POST"]),
        ("/login", login, ["GET", "POST"]),
        ("/logout", logout, ["POST"]),
    ):
        app.add_url_rule(path, view_func=view, methods=methods)
    return app


def _console() -> Console:
    console: Console = current_app.extensions["beatd"]
    return console


def _beat() -> Beat:
    return _console().beat


def page(template: str, code: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), code


def _start_clock() -> None:
    g.started = (time.perf_counter(), time.thread_time())


def _server_timing(response: Response) -> Response:
    """The request's time in the server, and the CPU its thread used (bench/bench_web.py)."""
    wall, cpu = g.get("started", (time.perf_counter(), time.thread_time()))
    spent, used = (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000
    response.headers["Server-Timing"] = f"app;dur={spent:.1f}, cpu;dur={used:.1f}"
    return response


def _beatd_error(exc: BeatdError) -> tuple[str, int]:
    code = next((c for kind, c in STATUS_OF.items() if isinstance(exc, kind)), 503)
    return page("error.html", code, message=one_line(_beat().shown(exc)))


def _http_error(exc: HTTPException) -> Response | tuple[str, int]:
    if isinstance(exc, SecurityError):  # an untrusted Host: no page links to make for it
        return Response(
            "this console answers loopback host names only\n", 400, mimetype="text/plain"
        )
    return page("error.html", exc.code or 500, message=exc.description or exc.name)


# -- reading -------------------------------------------------------------------------


def index() -> Response:
    return redirect(url_for("schedules"))


def schedules() -> tuple[str, int]:
    args = request.args
    where = ScheduleFilter(
        text=args.get("q", "").strip(),
        state=args.get("state") if args.get("state") in STATES else None,
        source=args.get("source") if args.get("source") in SOURCES else None,
    )
    number = _whole(args.get("page"), 1)
    listing = _beat().page(where, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    return page(
        "schedules.html",
        listing=listing,
        where=where,
        number=number,
        pages=max(1, math.ceil(listing.total / PAGE_SIZE)),
        first=(number - 1) * PAGE_SIZE,
        states=STATES,
        sources=SOURCES,
    )


def schedule() -> tuple[str, int]:
    return _schedule_page(request.args.get("name", ""))


def _schedule_page(
    name: str, code: int = 200, errors: Mapping[str, list[str]] | None = None
) -> tuple[str, int]:
    beat = _beat()
    info = beat.get(name)
    limit = min(_whole(request.args.get("limit"), HISTORY_ROWS), MAX_HISTORY_ROWS)
    now = beat.clock.now()
    return page(
        "schedule.html",
        code,
        info=info,
        definition=views.definition(info.schedule),
        timeline=views.timeline(_next_fires(info, now), info.schedule.timezone, now),
        history=beat.history(name, limit),
        limit=limit,
        config=str(beat.settings.path or "the config file"),
        errors=errors or {},
        form=request.form,
    )


def _next_fires(info: ScheduleInfo, now: datetime) -> list[Fire]:
    """The schedule's next fires, from the first instant the store has not decided yet."""
    if info.state != "active":
        return []
    return upcoming([info.schedule], now, limit=NEXT_FIRES, start_at=lambda _s: info.next_at)


def cluster() -> tuple[str, int]:
    with _console().status_lock:  # status() opens the broker connection it keeps: once
        status = _beat().status()
    return page("cluster.html", status=status, chart=views.lag_chart(status.lags))


# -- changing ------------------------------------------------------------------------


def _done(message: str, to: str) -> Response:
    log.info(f"web: {message}", extra={"client": request.remote_addr})
    flash(message)
    return redirect(to, 303)


def _name() -> str:
    return request.form.get("name", "")


def pause() -> Response:
    name = _name()
    _beat().pause(name, note=request.form.get("note", "").strip() or None)
    return _done(f"paused {name}", url_for("schedule", name=name))


def resume() -> Response:
    name = _name()
    _beat().resume(name)
    return _done(f"resumed {name}", url_for("schedule", name=name))


def trigger() -> Response:
    name = _name()
    fid = _beat().trigger(name)
    return _done(
        f"triggered {name}: fire {fid} (recorded; the running daemon sends it)",
        url_for("schedule", name=name),
    )


def backfill() -> Response | tuple[str, int]:
    name = _name()
    errors: dict[str, list[str]] = {}
    bounds: list[datetime] = []
    for key in ("from", "to"):
        try:
            bounds.append(parse_instant(key, request.form.get(key, "").strip()))
        except ConfigError as exc:
            errors[key] = [str(exc)]
    if not errors:
        try:
            done = _beat().backfill(name, bounds[0], bounds[1])
        except ConfigError as exc:
            errors["to"] = [str(exc)]
        else:
            message = (
                f"backfill {name}: {len(done.recorded)} of {done.instants} instants recorded "
                "(the others were already); the leader sends them"
            )
            return _done(message, url_for("schedule", name=name))
    return _schedule_page(name, 400, errors)


def remove() -> Response:
    name = _name()
    _beat().remove(name)
    return _done(f"removed {name}", url_for("schedules"))


def add() -> Response | tuple[str, int]:
    return _schedule_form(None)


def edit() -> Response | tuple[str, int]:
    beat = _beat()
    info = beat.get(request.values.get("name", ""))
    if info.source != "api":
        where = beat.settings.path or "the config file"
        abort(
            409, f"cannot edit {info.name!r}: it is declared in {where}; edit the file and reload"
        )
    return _schedule_form(info)


def _schedule_form(editing: ScheduleInfo | None) -> Response | tuple[str, int]:
    """The add or edit form: Preview shows the next fires, Save adds (or replaces)."""
    beat = _beat()
    context = dict(_console().form, editing=editing, preview=None)
    if request.method == "GET":
        values = forms.values_of(editing.schedule) if editing else forms.blank()
        return page("form.html", values=values, errors={}, **context)
    sub = forms.read(request.form)
    if editing is not None:
        sub.values["name"] = editing.name
    parsed: Schedule | None = None
    try:
        parsed = beat.parse(sub.name, sub.options)
    except ConfigError as exc:
        forms.place(sub, exc.problems)
    if parsed is not None and not sub.errors and request.form.get("action") == "save":
        try:
            beat.add(sub.name, replace=editing is not None, **sub.options)
        except AlreadyExists:  # the API's words name replace=True; here it is Edit
            sub.problem("name", f"schedule {sub.name!r} already exists; use its Edit to change it")
        except (Conflict, NotFound) as exc:
            sub.problem("name", str(exc))
        else:
            verb = "replaced" if editing else "added"
            return _done(f"{verb} {sub.name}", url_for("schedule", name=sub.name))
    if parsed is not None:
        now = beat.clock.now()
        fires = upcoming([parsed], now, limit=PREVIEW_FIRES)
        context["preview"] = views.timeline(fires, parsed.timezone, now)
    code = 400 if sub.errors else 200
    return page("form.html", code, values=sub.values, errors=sub.errors, **context)


# -- signing in ----------------------------------------------------------------------


def login() -> Response | tuple[str, int]:
    token = _console().token
    target = guard.safe_next(request.values.get("next"))
    if token is None:
        return redirect(target)
    if request.method == "POST":
        if guard.log_in(request.form.get("token", ""), token):
            log.info("web: logged in", extra={"client": request.remote_addr})
            return redirect(target, 303)
        log.warning("web: wrong token at login", extra={"client": request.remote_addr})
        return page("login.html", 401, target=target, error="wrong token")
    return page("login.html", target=target, error=None)


def logout() -> Response:
    session.clear()
    return redirect(url_for("login"), 303)


def _whole(text: str | None, default: int) -> int:
    """A positive whole number from a query argument, else `default`."""
    return int(text) if text and text.isdigit() and int(text) > 0 else default
