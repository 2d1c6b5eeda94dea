"""The wheel must carry every package and the migrations (a plain `pip install .`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from beatd.store.sql import migrate

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_for_setuptools() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "beatd").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["beatd._migrations"] == "migrations"
    assert (ROOT / "migrations" / "__init__.py").exists()


def test_migrations_are_found_without_alembic_ini() -> None:
    assert migrate.head() == "0004"
    assert not (ROOT / "alembic.ini").exists()


def test_revisions_list_every_migration_script_oldest_first() -> None:
    """The schema check trusts migrate.REVISIONS instead of reading the scripts."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate._config())
    found = tuple(script.revision for script in scripts.walk_revisions())[::-1]
    assert migrate.REVISIONS == found
    assert migrate.head() == scripts.get_current_head()
