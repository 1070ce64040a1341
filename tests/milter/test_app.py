"""The milter's pure helpers: who is trusted with the class header, SIZE parsing."""

from smtp_balancer_milter.app import MilterSettings, _size

from smtp_balancer.config.model import MilterConfig

S = MilterSettings.from_config(
    MilterConfig(trusted_networks=["10.0.0.0/8", "::1/128"], decision_timeout_ms=250)
)


def test_trust():
    assert S.is_trusted("10.1.2.3", "")
    assert S.is_trusted("::1", "")
    assert not S.is_trusted("192.0.2.9", "")
    assert S.is_trusted("192.0.2.9", "app-user")  # SASL-authenticated
    assert S.is_trusted("", "")  # local submission (sendmail / pickup)
    assert not S.is_trusted("not-an-ip", "")
    assert S.decision_timeout_s == 0.25


def test_size_from_esmtp_params():
    assert _size(("BODY=8BITMIME", "SIZE=12345")) == 12345
    assert _size(("size=7",)) == 7
    assert _size(("SIZE=big",)) is None and _size(()) is None
