"""The operator's path in a real headless Chromium, against real `beatd run` and `beatd web`.

The leader runs on PostgreSQL and publishes to RabbitMQ, the console is its
own process, and a consumer records what arrives: what the operator does in
the browser must show in the queue (pause: nothing more arrives; resume and
trigger: messages arrive) and in the pages (history rows, the leader's name).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_browser import Browser, WebProcess, chromium
from web_helpers import TOKEN, write_config

from beatd.api import Beat
from beatd.cli.web_cmds import TOKEN_ENV
from beatd.ids import fire_id
from beatd.store.sql import migrate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from daemon_cluster import Cluster, Consumer, running, wait_for

SCHEDULES = {
    "tick": {"every": "1s", "task": "app.tasks.tick"},
    "nightly-report": {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "task": "reports.nightly",
    },
    "billing-sync": {"every": "5m", "task": "billing.sync"},
    "cache-warmup": {"cron": "*/15 7-19 * * MON-FRI", "task": "cache.warm"},
    "month-end-close": {"rrule": "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=18", "task": "finance.close"},
}


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as opened:
        yield opened


@pytest.fixture
def cluster(pg_url: str, amqp_server: str, tmp_path: Path) -> Iterator[Cluster]:
    with running(pg_url, amqp_server, tmp_path) as c:
        yield c


def tick_ids(consumer: Consumer, since: float = 0.0) -> list[str]:
    """The ids of tick's messages that arrived after `since` (the id names the schedule)."""
    return [
        mid for mid, at, arrived in consumer.got if arrived > since and mid == fire_id("tick", at)
    ]


def test_the_operators_path(cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    cluster.write_config(SCHEDULES, lease="3s")
    with Beat.from_config(cluster.config) as beat:
        beat.add("payments-retry", every="10m", task="payments.retry", queue=cluster.queue)
        beat.add("<script>alert(1)</script>", cron="0 6 * * *", task="x.y", queue=cluster.queue)
    consumer = Consumer(cluster.amqp_url, cluster.queue)
    cluster.start()
    holder = cluster.wait_for(lambda: cluster.lease() and cluster.lease().holder, 30, "a leader")
    web = WebProcess.start(cluster.config, tmp_path)
    browser.base = web.url
    shots = tmp_path / "shots"
    try:
        cluster.wait_for(lambda: len(tick_ids(consumer)) >= 2, 20, "the first tick messages")

        # find the schedule: the list, then filtered on the server
        browser.open("/schedules")
        names = [a.text for a in browser.all("table.schedules td:first-child a")]
        assert "<script>alert(1)</script>" in names  # a name, shown as text: no script ran
        browser.screenshot("web-schedules", shots)
        browser.type("input[name=q]", "tic")
        browser.submit("form.filters button")
        assert [a.text for a in browser.all("table.schedules td:first-child a")] == ["tick"]
        browser.find("table.schedules td:first-child a").click()
        assert browser.text("h1").startswith("tick")

        # pause with a note: nothing more arrives
        browser.type("#note", "broker maintenance")
        browser.submit("#pause")
        assert browser.text(".flash") == "paused tick"
        assert browser.text(".note") == "Paused: broker maintenance"
        paused = time.time()
        time.sleep(1.5)  # a fire already handed to the broker may still land
        settled = time.time()
        with pytest.raises(AssertionError):
            wait_for(lambda: tick_ids(consumer, settled), 3, "a tick after the pause")
        late = [f for f in cluster.fires("tick") if f["scheduled_for"].timestamp() > paused + 1]
        assert late == []

        # resume: messages arrive again
        browser.submit("#resume")
        assert browser.text(".flash") == "resumed tick"
        resumed = time.time()
        cluster.wait_for(lambda: tick_ids(consumer, resumed), 10, "a tick after resume")

        # trigger: the message arrives and the history row says so
        browser.submit("#trigger")
        fire = re.fullmatch(
            r"triggered tick: fire (\S+) \(recorded; the running daemon sends it\)",
            browser.text(".flash"),
        )
        assert fire is not None
        cluster.wait_for(
            lambda: fire[1] in [m for m, _, _ in consumer.got], 10, "the triggered fire"
        )

        def history_shows_it() -> bool:
            browser.open("/schedule?name=tick")
            rows = [r.text for r in browser.all("table.history tbody tr")]
            return any(fire[1] in row and "manual" in row for row in rows)

        cluster.wait_for(history_shows_it, 10, "the trigger's history row")
        browser.screenshot("web-schedule", shots)

        # add a schedule: one mistake, corrected, previewed, saved
        browser.open("/add")
        browser.type("#name", "weekly-digest")
        browser.type("#spec", "0 8 * * MONDAY")
        browser.type("#task", "mail.digest")
        browser.type("#timezone", "Europe/Berlin")
        browser.type("#queue", cluster.queue)
        browser.submit("#save")
        assert browser.text("#spec-error").startswith("schedule 'weekly-digest': cron: ")
        browser.screenshot("web-add-error", shots)
        with Beat.from_config(cluster.config) as beat:
            assert "weekly-digest" not in [i.name for i in beat.page().schedules]
        browser.type("#spec", "0 8 * * MON")
        browser.submit("#preview")
        previewed = [r.text for r in browser.all("#preview-fires tbody tr:not(.dst)")]
        assert len(previewed) == 5 and all(" 08:00:00 +0" in row for row in previewed)
        browser.screenshot("web-add", shots)
        browser.submit("#save")
        assert browser.text("h1").startswith("weekly-digest")
        assert browser.text(".flash") == "added weekly-digest"
        with Beat.from_config(cluster.config) as beat:
            assert beat.get("weekly-digest").schedule.timezone.key == "Europe/Berlin"

        # the cluster page names the leader
        browser.open("/cluster")
        assert browser.text("#leader") == holder
        browser.screenshot("web-cluster", shots)
    finally:
        assert web.stop() == 0
        consumer.stop()


def test_the_cluster_page_shows_who_holds_each_partition_at_which_epoch(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    count = 4
    cluster.write_config(
        {f"job-{i}": {"every": "1s", "task": "app.tasks.job"} for i in range(8)},
        lease="3s",
        extra=f"partitions = {count}",
    )
    first, second = cluster.start(), cluster.start()

    def settled() -> dict[int, tuple[str, int]] | None:
        now = cluster.partition_holders(count)
        by = sorted(holder for holder, _ in now.values())
        expected = sorted([first.holder] * 2 + [second.holder] * 2)
        return now if by == expected else None

    cluster.wait_for(settled, 30, "two partitions held by each instance")
    web = WebProcess.start(cluster.config, tmp_path)
    browser.base = web.url
    try:
        before = settled()
        browser.open("/cluster")
        shown = {
            int(row.find_element("css selector", "td").text): (
                row.find_element("css selector", "td.holder").text,
                int(row.find_element("css selector", "td.epoch").text),
            )
            for row in browser.all("table.partitions tbody tr")
        }
        instances = {
            row.find_element("css selector", "td.holder").text: row.find_element(
                "css selector", "td.held"
            ).text
            for row in browser.all("table.instances tbody tr")
        }
        assert settled() == before  # nothing moved while the page was read
        assert shown == before
        assert len({epoch for _, epoch in shown.values()}) == count  # an epoch per partition
        assert browser.text("#leader").startswith(f"{count}, each with its own lease")
        assert instances == {
            b.holder: ", ".join(str(p) for p, (h, _) in sorted(shown.items()) if h == b.holder)
            for b in (first, second)
        }
        browser.screenshot("web-cluster-partitions", tmp_path / "shots")
    finally:
        assert web.stop() == 0


@pytest.fixture
def sqlite_config(tmp_path: Path, sqlite_url: str) -> Path:
    config = write_config(tmp_path, sqlite_url)
    migrate.upgrade(sqlite_url)
    with Beat.from_config(config) as beat:
        beat.add("ping", every="30s", task="app.ping")
    return config


def test_login_with_the_token_and_a_wrong_one_refused(
    sqlite_config: Path, browser: Browser, tmp_path: Path
) -> None:
    web = WebProcess.start(sqlite_config, tmp_path, env={TOKEN_ENV: TOKEN})
    browser.base = web.url
    try:
        browser.open("/schedule?name=ping")
        assert browser.path.startswith("/login")
        browser.type("#token", "not-the-token-at-all")
        browser.submit("button[type=submit]")
        assert browser.text("#token-error") == "wrong token"
        assert browser.path.startswith("/login")
        browser.screenshot("web-login", tmp_path)

        browser.type("#token", TOKEN)
        browser.submit("button[type=submit]")
        assert browser.path == "/schedule?name=ping"
        assert browser.text("h1").startswith("ping")
        cookie = browser.driver.get_cookie("beatd_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert TOKEN not in browser.driver.page_source
    finally:
        assert web.stop() == 0
    assert TOKEN not in web.log.read_text()


def test_a_script_in_a_name_is_text_in_the_browser(
    sqlite_config: Path, browser: Browser, tmp_path: Path
) -> None:
    evil = '<img src=x onerror="document.title=1"><script>document.title="owned"</script>'
    with Beat.from_config(sqlite_config) as beat:
        beat.add(evil, every="1m", task="x.y")
        beat.pause(evil, note=evil)
        beat.trigger(evil)
    web = WebProcess.start(sqlite_config, tmp_path)
    browser.base = web.url
    try:
        browser.open("/schedules")
        link = browser.find("table.schedules td:first-child a")
        assert link.text == evil
        link.click()
        assert browser.text("h1").startswith(evil)
        assert browser.text(".note") == f"Paused: {evil}"
        assert browser.all("script") == [] and browser.all("main img") == []
        assert browser.title == f"{evil} · beatd"  # the name as text: no script set the title
    finally:
        assert web.stop() == 0
