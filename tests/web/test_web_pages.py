"""The console's pages and actions over a real database (SQLite and PostgreSQL).

Each action must change the store exactly as the CLI's command does, and bad
input must get the CLI's one-line message next to its field and change
nothing.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from web_helpers import FILE_SCHEDULE, Client, Console

from beatd.errors import NotFound
from beatd.ids import fire_id
from beatd.model import Decision, Outcome


def rows(page: str) -> list[str]:
    """The schedule names listed, in order."""
    return [
        html.unescape(n)
        for n in re.findall(r'<td><a href="/schedule\?name=[^"]*">([^<]*)</a>', page)
    ]


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def error_of(page: str, field: str) -> str:
    found = re.search(rf'<p class="error" role="alert" id="{field}-error">([^<]*)</p>', page)
    assert found, f"no error next to {field}"
    return html.unescape(found.group(1))


def test_list_pages_on_the_server_and_filters(console: Console, client: Client) -> None:
    for i in range(120):
        console.beat.add(f"job-{i:03d}", every="1h", task="app.job")
    console.beat.pause("job-007", note="disk full")

    first = client.text("/schedules")
    assert "1\N{EN DASH}50 of 121" in first
    assert rows(first)[:2] == ["job-000", "job-001"] and len(rows(first)) == 50
    last = client.text("/schedules?page=3")
    assert rows(last) == [f"job-{i:03d}" for i in range(100, 120)] + [FILE_SCHEDULE]

    assert rows(client.text("/schedules?q=OB-11")) == [f"job-11{i}" for i in range(10)]
    assert rows(client.text("/schedules?state=paused")) == ["job-007"]
    assert rows(client.text("/schedules?source=file")) == [FILE_SCHEDULE]
    assert "no schedule matches" in client.text("/schedules?q=nothing&state=finished")


def test_list_shows_spec_in_words_zone_next_and_last_outcome(
    console: Console, client: Client
) -> None:
    console.beat.add("report", cron="0 9 * * MON-FRI", timezone="Europe/Berlin", task="app.r")
    console.beat.trigger("report")
    page = client.text("/schedules?q=report")
    assert "At 09:00, Monday through Friday" in page
    assert "Europe/Berlin" in page
    assert '<span class="outcome pending">pending</span>' in page  # the trigger, not sent yet


def test_schedule_page_shows_definition_next_fires_and_history(
    console: Console, client: Client
) -> None:
    console.beat.add(
        "report", cron="0 9 * * *", timezone="Europe/Berlin", task="app.r", kwargs={"full": True}
    )
    fire = console.beat.trigger("report")
    page = client.text("/schedule?name=report")
    assert "<th>kwargs</th><td><code>{&#34;full&#34;: true}</code>" in page
    local_nines = re.findall(
        r"<td>\d{4}-\d\d-\d\d 09:00:00 \+0[12]:00 <small>CES?T</small></td>", page
    )
    assert len(local_nines) == 10  # the next fires, local time, with the UTC time beside
    assert fire in page and "pending" in page


def test_pause_with_a_note_resume_trigger_and_backfill(console: Console, client: Client) -> None:
    console.beat.add("ping", every="1m", task="app.ping")
    client.get("/schedule?name=ping")

    done = client.post("/schedule/pause", {"name": "ping", "note": "until the <db> is back"})
    assert done.status_code == 303 and done.headers["Location"] == "/schedule?name=ping"
    info = console.beat.get("ping")
    assert (info.state, info.note) == ("paused", "until the <db> is back")
    page = client.text("/schedule?name=ping")
    assert "paused ping" in page  # the flash line
    assert "Paused: until the &lt;db&gt; is back" in page

    assert client.post("/schedule/resume", {"name": "ping"}).status_code == 303
    assert console.beat.get("ping").state == "active"

    assert client.post("/schedule/trigger", {"name": "ping"}).status_code == 303
    (record,) = console.beat.history("ping")
    assert record.manual and record.outcome is Outcome.PENDING
    assert f"fire {record.fire_id}" in client.text("/schedule?name=ping")

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    done = client.post(
        "/schedule/backfill",
        {"name": "ping", "from": iso(start), "to": iso(start + timedelta(minutes=4))},
    )
    assert done.status_code == 303
    backfilled = [r.scheduled_for for r in console.beat.history("ping") if r.reason == "backfill"]
    assert sorted(backfilled) == [start + timedelta(minutes=m) for m in range(5)]
    assert "backfill ping: 5 of 5 instants recorded" in client.text("/schedule?name=ping")


def test_bad_backfill_input_gets_the_cli_message_and_changes_nothing(
    console: Console, client: Client
) -> None:
    console.beat.add("ping", every="1m", task="app.ping")
    bad = client.post(
        "/schedule/backfill", {"name": "ping", "from": "yesterday", "to": "2026-01-01T00:00:00Z"}
    )
    assert bad.status_code == 400
    assert error_of(bad.get_data(as_text=True), "from") == (
        "from: not an ISO-8601 time such as 2027-03-14T09:00:00Z: 'yesterday'"
    )
    backwards = client.post(
        "/schedule/backfill",
        {"name": "ping", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    )
    assert error_of(backwards.get_data(as_text=True), "to") == "backfill: --to is before --from"
    assert console.beat.history("ping") == []


def test_add_form_puts_each_cli_message_next_to_its_field_and_adds_nothing(
    console: Console, client: Client
) -> None:
    client.get("/add")
    bad = client.post(
        "/add",
        {
            "name": "report", "kind": "cron", "spec": "61 * * * *", "task": "app.r",
            "timezone": "Europe/Berln", "kwargs": "{full: true}", "max_fires": "ten",
            "misfire": "coalesce", "action": "save",
        },
    )  # fmt: skip
    assert bad.status_code == 400
    page = bad.get_data(as_text=True)
    assert error_of(page, "spec").startswith("schedule 'report': cron: ")
    assert error_of(page, "timezone") == (
        "schedule 'report': timezone: unknown time zone 'Europe/Berln'"
        " (did you mean 'Europe/Berlin'?)"
    )
    assert error_of(page, "kwargs").startswith("kwargs: not valid JSON: ")
    assert error_of(page, "max_fires") == "max_fires: expected a whole number, got 'ten'"
    assert 'value="61 * * * *"' in page  # what was typed stays in the form
    with pytest.raises(NotFound):
        console.beat.get("report")


def test_add_previews_the_next_five_fires_then_saves(console: Console, client: Client) -> None:
    client.get("/add")
    form = {
        "name": "report", "kind": "cron", "spec": "0 9 * * *", "task": "app.r",
        "timezone": "America/New_York", "kwargs": '{"full": true}', "enabled": "on",
    }  # fmt: skip
    preview = client.post("/add", {**form, "action": "preview"})
    assert preview.status_code == 200
    assert (
        len(re.findall(r"\d{4}-\d\d-\d\d 09:00:00 -0[45]:00", preview.get_data(as_text=True))) == 5
    )
    with pytest.raises(NotFound):
        console.beat.get("report")

    saved = client.post("/add", {**form, "action": "save"})
    assert saved.status_code == 303 and saved.headers["Location"] == "/schedule?name=report"
    schedule = console.beat.get("report").schedule
    assert (schedule.task, schedule.timezone.key, dict(schedule.kwargs)) == (
        "app.r", "America/New_York", {"full": True},
    )  # fmt: skip

    again = client.post("/add", {**form, "action": "save"})
    assert error_of(again.get_data(as_text=True), "name") == (
        "schedule 'report' already exists; use its Edit to change it"
    )


def test_edit_replaces_an_api_schedule_and_remove_deletes_it(
    console: Console, client: Client
) -> None:
    console.beat.add("ping", every="1m", task="app.ping", queue="fast", priority=3)
    form = client.text("/edit?name=ping")
    assert 'value="fast"' in form and 'value="3"' in form and 'value="1m"' in form
    values = dict(
        re.findall(r'<input type="text" id="([a-z_]+)" name="[a-z_]+" value="([^"]*)"', form)
    )
    done = client.post(
        "/edit",
        {
            **values,
            "name": "ping",
            "kind": "every",
            "spec": "5m",
            "enabled": "on",
            "action": "save",
        },
    )
    assert done.status_code == 303
    schedule = console.beat.get("ping").schedule
    assert (schedule.queue, schedule.priority, schedule.spec.period) == (  # type: ignore[union-attr]
        "fast", 3, timedelta(minutes=5),
    )  # fmt: skip

    assert client.post("/schedule/remove", {"name": "ping"}).headers["Location"] == "/schedules"
    with pytest.raises(NotFound):
        console.beat.get("ping")


def test_a_file_schedule_is_read_only_with_a_hint(console: Console, client: Client) -> None:
    page = client.text(f"/schedule?name={FILE_SCHEDULE}")
    assert 'id="file-hint"' in page and "edit the file and reload" in page
    assert 'id="edit"' not in page and 'id="remove"' not in page
    assert client.get(f"/edit?name={FILE_SCHEDULE}").status_code == 409
    refused = client.post("/schedule/remove", {"name": FILE_SCHEDULE})
    assert refused.status_code == 409
    shown = html.unescape(refused.get_data(as_text=True))
    assert f"cannot remove {FILE_SCHEDULE!r}: it is declared in" in shown
    assert console.beat.get(FILE_SCHEDULE).source == "file"
    # pausing works on every schedule
    assert client.post("/schedule/pause", {"name": FILE_SCHEDULE}).status_code == 303
    assert console.beat.get(FILE_SCHEDULE).state == "paused"


def test_an_unknown_schedule_is_a_404_with_one_line(client: Client) -> None:
    missing = client.get("/schedule?name=nope")
    assert missing.status_code == 404
    assert "no schedule named &#39;nope&#39;" in missing.get_data(as_text=True)


def test_cluster_names_the_leader_and_charts_the_lag(console: Console, client: Client) -> None:
    console.beat.add("ping", every="1m", task="app.ping")
    store = console.beat.store
    lease = store.acquire("host-a:4242", timedelta(seconds=30), "token-a")
    store.heartbeat("host-a:4242", "token-a")
    assert lease is not None
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=5)
    console.beat.backfill("ping", start, start + timedelta(minutes=2))
    # three fires sent on schedule, 20, 40 and 3000 ms late (backfills are left out of the lag)
    instants = [start + timedelta(hours=h) for h in (1, 2, 3)]
    store.record(
        lease, [Decision("ping", at, fire_id("ping", at), Outcome.PENDING) for at in instants], []
    )
    for at, late in zip(instants, (0.02, 0.04, 3.0), strict=True):
        store.mark_sent([fire_id("ping", at)], at + timedelta(seconds=late))

    page = client.text("/cluster")
    assert '<td id="leader">host-a:4242</td>' in page
    assert (
        '<tr><td class="holder">host-a:4242</td><td><span class="role leader">leader</span></td>'
        in page
    )
    assert 'class="partitions"' not in page and 'class="held"' not in page  # P = 1: one lease
    assert f"<td>{lease.epoch}</td>" in page
    assert "The last 3 fires sent on schedule" in page
    assert "p50 <strong>40 ms</strong>, p99 <strong>3000 ms</strong>" in page
    assert page.count('<rect x="') == 10
