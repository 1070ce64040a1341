"""Reading Postfix's configuration through the real postconf(1), on a config of our own."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtp_balancer import postconf


@pytest.fixture
def config_dir(tmp_path: Path) -> str:
    (tmp_path / "main.cf").write_text(
        "compatibility_level = 3.6\ntransport_maps = hash:/etc/postfix/transport\n"
    )
    (tmp_path / "master.cf").write_text(
        "smtp      unix  -       -       n       -       -       smtp\n"
        "nomap     unix  -       -       n       -       -       trivial-rewrite\n"
        "  -o transport_maps=\n"
        "  -o { syslog_name = postfix/no map }\n"
    )
    return str(tmp_path)


def test_values_services_and_options(config_dir: str) -> None:
    assert postconf.main_values(config_dir, ["transport_maps", "header_checks"]) == {
        "transport_maps": "hash:/etc/postfix/transport",
        "header_checks": "",  # unset: its default
    }
    assert postconf.master_services(config_dir) == {"smtp/unix", "nomap/unix"}
    # an empty -o value overrides main.cf too: it must read as "", not as missing
    assert postconf.master_options(config_dir) == {
        "nomap/unix/transport_maps": "",
        "nomap/unix/syslog_name": "postfix/no map",
    }


def test_a_broken_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(postconf.PostconfError, match=r"postconf -c .*absent.* failed"):
        postconf.main_values(str(tmp_path / "absent"), ["transport_maps"])
