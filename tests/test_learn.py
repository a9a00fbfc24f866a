"""`tierwise learn` as a user runs it: records in a SQLite file, a config file with comments, a real proxy
reloaded over HTTP, and the patch applied by `patch` and `git apply`."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from tierwise.cli import app
from tierwise.config import load_config
from tierwise.store import Comparison, Feedback, RoutingRecord, SQLiteStore
from tierwise.testing.upstreams import FakeUpstream

ADMIN = "admin-secret-1"

CONFIG = """\
# The team's router. Reviewed by hand: keep these comments.
providers:
  up: {{type: openai, base_url: "{url}", api_key: sk-upstream}}
models:
  cheap-a: {{provider: up, price: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}}}
  mid-a: {{provider: up, price: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
  premium-a: {{provider: up, price: {{input_per_mtok: 10.0, output_per_mtok: 40.0}}}}
tiers:
  cheap: [cheap-a]   # the workhorse
  mid: [mid-a]
  premium: [premium-a]
routing:
  policy: cascade   # cheapest first, gates judge
  cascade:
    max_escalations: 2
auth:
  admin_key: {admin}
server:
  port: {port}
retry: {{attempts: 1, timeout_s: 5}}
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def record(n: int, klass: str, path: list[str], *, ts: float | None = None) -> RoutingRecord:
    final = path[-1].split("(")[0]
    return RoutingRecord(
        request_id=f"{klass}-{n}", ts=ts if ts is not None else time.time() - 60, endpoint="chat.completions",
        status="ok", http_status=200, requested_model="tierwise/auto", request_class=klass, tier=final,
        model=f"{final}-a", reason="cascade:cheapest", cost_usd=0.001, baseline_cost_usd=0.01,
        decision={"tier": final, "class": klass, "policy": "cascade", "path": path},
    )  # fmt: skip


def crafted_log(db: Path) -> Path:
    """code-review: 20 of 25 escalate from cheap (80%). faq: 30, none escalate. rare: 5, all escalate (too
    few). legalish: 25 at 40% (normal) but its shadow comparisons lose to the baseline. chatty: never escalates
    but users rate it down. old: 40 records older than the window, all escalating."""
    store = SQLiteStore(db).start()
    up, stay = ["cheap(fail:json)", "mid(pass)"], ["cheap(pass)"]
    for i in range(25):
        store.submit(record(i, "code-review", up if i < 20 else stay))
    for i in range(30):
        store.submit(record(i, "faq", stay))
    for i in range(5):
        store.submit(record(i, "rare", up))
    for i in range(25):
        store.submit(record(i, "legalish", up if i < 10 else stay))
        store.submit(
            Comparison(
                request_id=f"legalish-{i}", ts=time.time() - 60, mode="baseline_sample",
                request_class="legalish", router_tier="cheap", router_model="cheap-a",
                baseline_model="premium-a", judge="judge:j", score=0.0 if i % 3 else 0.25,
            )
        )  # fmt: skip
    for i in range(25):
        store.submit(record(i, "chatty", stay))
        store.submit(Feedback(request_id=f"chatty-{i}", ts=time.time() - 30, score=0.0))
    for i in range(40):
        store.submit(record(i, "old", up, ts=time.time() - 30 * 86400))
    store.flush()
    store.close()
    return db


def write_config(path: Path, url: str, port: int = 9) -> Path:
    path.write_text(CONFIG.format(url=url, admin=ADMIN, port=port))
    return path


@pytest.fixture
def upstream() -> Any:
    with FakeUpstream("openai") as up:
        yield up


def test_learn_proposes_a_patch_and_changes_nothing(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = crafted_log(tmp_path / "records.db")
    config = write_config(tmp_path / "router.yaml", upstream.base_url)
    before = config.read_text()

    result = cli("learn", "--since", "7d", "--config", "router.yaml", "--db", db, "--out", "learn.patch")

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "code-review: routing.cascade.classes.code-review.start: mid" in text
    assert "20 of 25 cascaded requests (80%) escalated past their start tier" in text
    assert "faq: routing.cascade.classes.faq.policy: direct, routing.cascade.classes.faq.tier: cheap" in text
    assert "0 of 30 cascaded requests (0%) escalated" in text
    assert "legalish: routing.cascade.classes.legalish.start: mid" in text
    assert "below the baseline: preference 0.09 (95% CI 0.04-0.14)" in text and "over 25 judged pairs" in text
    assert "unchanged: rare: 5 cascaded requests, fewer than 20: no change" in text
    assert "unchanged: chatty: never escalates, but its feedback is poor" in text
    assert "old:" not in text  # its records are older than the window
    assert "--- router.yaml" in result.output and "+++ router.yaml" in result.output
    assert "nothing changed" in text
    # Without --apply nothing changes: not the file, not the changes table.
    assert config.read_text() == before
    assert SQLiteStore(db).changes() == []

    # The patch file carries the reasons and applies with patch -p0 and git apply -p0.
    patch = (tmp_path / "learn.patch").read_text()
    assert patch.startswith("# tierwise learn --since 7d:")
    assert "#   start at mid instead of cheap: 20 of 25" in patch
    for tool in (["patch", "-p0", "-i", "learn.patch"], ["git", "apply", "-p0", "learn.patch"]):
        if shutil.which(tool[0]) is None:
            continue
        config.write_text(before)
        done = subprocess.run(tool, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        changed = config.read_text()
        assert "# The team's router. Reviewed by hand: keep these comments." in changed
        assert "# the workhorse" in changed and "# cheapest first, gates judge" in changed
        learned = load_config(config).routing.cascade.classes
        assert learned["code-review"].start == "mid" and learned["legalish"].start == "mid"
        assert (learned["faq"].policy, learned["faq"].tier) == ("direct", "cheap")
        assert set(learned) == {"code-review", "faq", "legalish"}
        assert "tierwise learn" in changed and "20/25 cascaded requests escalated" in changed


def test_apply_writes_the_file_reloads_the_proxy_and_records_the_change(
    tmp_path: Path, upstream: FakeUpstream, start_proxy: Any
) -> None:
    db = crafted_log(tmp_path / "records.db")
    config = write_config(tmp_path / "router.yaml", upstream.base_url)
    proxy = start_proxy(load_config(config), config)
    # The proxy's own port goes into the file: learn reloads the proxy the config names.
    write_config(config, upstream.base_url, proxy.port)

    def ask(klass: str) -> httpx.Response:
        body = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "hello there"}]}
        return httpx.post(
            proxy.base_url + "/chat/completions", json=body, headers={"x-tierwise-class": klass}, timeout=10
        )

    before = ask("faq")
    assert before.headers["x-tierwise-path"] == "cheap(pass)"
    assert ask("code-review").headers["x-tierwise-path"] == "cheap(pass)"

    result = cli("learn", "--config", config, "--db", db, "--apply")

    assert result.exit_code == 0, result.output
    assert f"the proxy at http://127.0.0.1:{proxy.port} reloaded the config" in flat(result.output)
    text = config.read_text()
    assert "# The team's router. Reviewed by hand: keep these comments." in text and "# the workhorse" in text
    # Requests of the changed classes follow the new config at once.
    faq = ask("faq")
    assert faq.status_code == 200
    assert (faq.headers["x-tierwise-tier"], faq.headers["x-tierwise-reason"]) == ("cheap", "class=faq")
    assert "x-tierwise-path" not in faq.headers
    code = ask("code-review")
    assert code.headers["x-tierwise-path"] == "mid(pass)"
    assert code.headers["x-tierwise-reason"] == "cascade:mid"
    # One change row, with the diff it applied and the numbers behind it.
    changes = SQLiteStore(db).changes()
    assert len(changes) == 1
    change = changes[0]
    assert (change.source, change.applied, change.config_path) == ("learn", True, str(config))
    assert "+++ " in change.patch and "start: mid" in change.patch
    assert "code-review: routing.cascade.classes.code-review.start: mid" in change.summary
    assert change.detail is not None and change.detail["reload"] == "reloaded"
    by_class = {p["class"]: p for p in change.detail["proposals"]}
    assert by_class["code-review"]["numbers"]["escalated"] == 20
    assert by_class["faq"]["set"] == {"routing.cascade.classes.faq.policy": "direct",
                                      "routing.cascade.classes.faq.tier": "cheap"}  # fmt: skip

    # Learning again from the same records proposes nothing new for the classes already changed.
    again = cli("learn", "--config", config, "--db", db)
    assert again.exit_code == 0, again.output
    assert "but the config already starts it at mid (these records predate that)" in flat(again.output)
    assert "faq:" not in again.output


def test_apply_when_the_proxy_cannot_be_reached_still_writes_the_file(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = crafted_log(tmp_path / "records.db")
    config = write_config(tmp_path / "router.yaml", upstream.base_url)
    result = cli("learn", "--config", config, "--db", db, "--apply", "--proxy-url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    text = flat(result.output)
    assert "cannot reach the proxy at http://127.0.0.1:9/v1/tierwise/admin/reload" in text
    assert f"{config} is written; reload the proxy yourself" in flat(result.output)
    assert load_config(config).routing.cascade.classes["code-review"].start == "mid"
    [change] = SQLiteStore(db).changes()
    assert change.applied and change.detail is not None
    assert change.detail["reload"].startswith("reload failed: cannot reach the proxy")


def test_a_class_too_small_or_healthy_gets_no_change(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "records.db"
    store = SQLiteStore(db).start()
    for i in range(19):  # 19 < 20, all escalating
        store.submit(record(i, "small", ["cheap(fail:json)", "mid(pass)"]))
    for i in range(30):  # 30% escalate: the normal band
        store.submit(record(i, "steady", ["cheap(fail:json)", "mid(pass)"] if i < 9 else ["cheap(pass)"]))
    store.flush()
    store.close()
    config = write_config(tmp_path / "router.yaml", upstream.base_url)
    result = cli("learn", "--config", config, "--db", db, "--min-requests", "20")
    assert result.exit_code == 0, result.output
    assert "small: 19 cascaded requests, fewer than 20: no change" in flat(result.output)
    assert "no change to propose" in result.output and "steady" not in result.output
    assert "---" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "a week"], "--since: expected a span like 7d, 24h or 30m, got 'a week'"),
        (["--db", "missing.db"], "no records at missing.db: serve some requests first"),
        (["--apply"], "--apply needs --config FILE: the embedded default config has no file"),
    ],
)
def test_bad_input_is_named(args: list[str], message: str) -> None:
    result = cli("learn", *args)
    assert result.exit_code == 2
    assert message in flat(result.output)


def test_no_records_in_the_window(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "records.db"
    store = SQLiteStore(db).start()
    store.submit(record(0, "faq", ["cheap(pass)"], ts=time.time() - 10 * 86400))
    store.flush()
    store.close()
    config = write_config(tmp_path / "router.yaml", upstream.base_url)
    result = cli("learn", "--config", config, "--db", db, "--since", "7d")
    assert result.exit_code == 2
    assert f"no records in the last 7d in {db}: nothing to learn from" in flat(result.output)


def test_a_class_tier_needs_policy_direct() -> None:
    base = yaml.safe_load(CONFIG.format(url="http://127.0.0.1:9/v1", admin=ADMIN, port=9))
    base["routing"]["cascade"]["classes"] = {"faq": {"tier": "cheap"}}
    from tierwise.config import parse_config
    from tierwise.errors import ConfigError

    with pytest.raises(ConfigError, match=r"routing.cascade.classes.faq: tier: needs policy: direct"):
        parse_config(base, "t")
    base["routing"]["cascade"]["classes"] = {"faq": {"policy": "direct", "tier": "gold"}}
    with pytest.raises(ConfigError, match=r"routing.cascade.classes.faq.tier: unknown tier 'gold'"):
        parse_config(base, "t")


def pairs(klass: str, n: int, score: float, router_tier: str = "cheap") -> list[Comparison]:
    return [
        Comparison(
            request_id=f"{klass}-{i}",
            ts=time.time() - 60,
            mode="baseline_sample",
            request_class=klass,
            router_tier=router_tier,
            router_model=f"{router_tier}-a",
            baseline_model="premium-a",
            judge="judge:j",
            score=score,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("klass", "routing", "configured"),
    [
        ("faq", {"cascade": {"classes": {"faq": {"policy": "direct", "tier": "premium"}}}}, "premium"),
        ("chat", {"cascade": {"classes": {"chat": {"policy": "direct"}}}, "task_tiers": {"chat": "premium"}},
         "premium"),
        ("chat", {"policy": "direct", "task_tiers": {"chat": "mid"}}, "mid"),
        ("chat", {"cascade": {"start": "classifier"}, "task_tiers": {"chat": "premium"}}, "premium"),
    ],
)  # fmt: skip
def test_a_proposal_never_moves_a_class_below_its_configured_tier(
    klass: str, routing: dict[str, Any], configured: str
) -> None:
    """Shadow pairs lost at cheap would move the class up to mid; where the config already sends it at mid
    or higher (a direct class's tier, its task type's tier), learn leaves it."""
    from tierwise.config import parse_config
    from tierwise.learn import analyse

    base = yaml.safe_load(CONFIG.format(url="http://127.0.0.1:9/v1", admin=ADMIN, port=9))
    plain = parse_config(base, "t")
    base["routing"] = {**base["routing"], **routing}
    learned = analyse(parse_config(base, "t"), [], comparisons=pairs(klass, 30, 0.0))
    assert learned.proposals == []
    assert any(f"already sends it at {configured}" in n or f"already starts it at {configured}" in n
               for n in learned.notes), learned.notes  # fmt: skip
    # Without that configured tier, the same pairs do propose mid.
    moved = analyse(plain, [], comparisons=pairs(klass, 30, 0.0)).proposals
    assert [p.numbers["to_tier"] for p in moved] == ["mid"]


def test_never_escalates_does_not_go_direct_below_the_configured_start() -> None:
    from tierwise.config import parse_config
    from tierwise.learn import analyse

    base = yaml.safe_load(CONFIG.format(url="http://127.0.0.1:9/v1", admin=ADMIN, port=9))
    base["routing"]["cascade"]["classes"] = {"faq": {"start": "mid"}}
    records = [record(i, "faq", ["cheap(pass)"]) for i in range(30)]  # records from before start: mid
    learned = analyse(parse_config(base, "t"), records)
    assert learned.proposals == []
    assert any("already starts it at mid, above cheap" in n for n in learned.notes), learned.notes
