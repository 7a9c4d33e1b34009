"""The ACL rules kcap gives Redis: the lines in docs/security.md are the code's, and no admin
command slips in. (tests/integration/test_broker_access.py runs real workers under them.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.redis_acl import EMBEDDED_USER_RULES, KCAP_COMMANDS, acl_setuser_lines, role_rules

SECURITY = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_the_security_page_gives_exactly_the_lines_the_code_makes() -> None:
    section = SECURITY.read_text().split("## ACL users per role", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("ACL SETUSER")]
    assert lines == acl_setuser_lines()


ADMIN = "config save bgsave flushall flushdb debug shutdown module acl keys info client replicaof slaveof"
ADMIN += " eval monitor migrate restore script|flush script|kill sort"


@pytest.mark.parametrize("command", ADMIN.split())
def test_no_admin_command_is_allowed(command: str) -> None:
    assert command not in KCAP_COMMANDS
    assert f"+{command} " not in EMBEDDED_USER_RULES + " " and "+@" not in EMBEDDED_USER_RULES
    assert EMBEDDED_USER_RULES.split(" -@all ")[0] == "~* &*"


def test_role_rules_follow_the_queue_prefix_and_the_db() -> None:
    gpu = role_rules("kcap-gpu", queue_prefix="one-", db=2).split()
    assert {"~one-caption*", "%W~one-route*", "~kcap:one-attempts:one-caption:*"} <= set(gpu)
    assert {"%W~kcap:one-dead_letters", "~kcap:one-dead_letters:total"} <= set(gpu)
    assert {"&/2.celeryev/*", "&/2.celery.pidbox"} <= set(gpu)
    assert not [
        rule for rule in gpu if rule.startswith("~kcap:") and rule.endswith(":*") and "attempts" not in rule
    ]
    storage = role_rules("kcap-storage", queue_prefix="one-", db=2).split()
    assert {"~one-caption*", "~one-route*", "~kcap:one-*"} <= set(storage)
    with pytest.raises(ValueError, match="no such role"):
        role_rules("kcap-admin")
