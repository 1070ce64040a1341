"""No internal header leaves the host in a DSN (issue #14), on real Postfix.

The milter adds X-Egress-Route (and here X-Egress-Info) to every message it
routes. The sink answers 550 for one domain and 450 for another, so Postfix
returns bounces and delay notices to the sender, through its default smtp
transport rather than one of our endpoint transports. Those notices carry the
original message or its headers as an attached part; neither may show ours.
"""

from __future__ import annotations

from integration.configs import ENDPOINT_IP
from integration.waits import MAIL_S, wait_until

INTERNAL = (b"X-Egress-Route", b"X-Egress-Info")


def test_bounces_and_delay_notices_carry_no_internal_header(mail_system):
    ms = mail_system({"milter": {"info_header": "X-Egress-Info"}}, policy=False, milter=True)
    for ip in ENDPOINT_IP.values():
        ms.sink.script(ip, "gone.test", "550 5.1.1 no such user")
        ms.sink.script(ip, "later.test", "450 4.2.0 try again later")
    with (ms.postfix.config_dir / "main.cf").open("a") as main:
        main.write("delay_warning_time = 1s\n")  # a delay notice on the next retry
    ms.postfix.reload()

    for i in range(4):  # SMTP and sendmail(1): both are decided by the milter here
        ms.send("app@shop.test", [f"user{i}@gone.test"], seq=i)
        ms.sendmail("app@shop.test", [f"user{i}@gone.test"], seq=10 + i)
    ms.send("app@shop.test", ["slow@later.test"], seq=20)
    ms.send("app@shop.test", ["fine@example.test"], seq=21)  # delivered: the control

    def notices():
        return [m for m in ms.sink.messages if m.mail_from in ("", "<>")]  # the null sender

    def bounces_and_delays():
        got = notices()
        bounces = [m for m in got if b"Undelivered Mail Returned to Sender" in m.content]
        delays = [m for m in got if b"Delayed Mail" in m.content]
        return len(bounces) >= 8 and delays and got

    got = wait_until(bounces_and_delays, MAIL_S, "8 bounces and a delay notice at the sink")
    for notice in got:
        # the notice really carries the original message or its headers...
        assert b"X-Test-Seq: " in notice.content
        # ...and none of ours
        for name in INTERNAL:
            assert name not in notice.content, notice.content.decode(errors="replace")[:3000]
    # the control may reach the sink after the notices (a hog-loop run read it too soon)
    delivered = wait_until(
        lambda: [m for m in ms.sink.messages if m.mail_from == "app@shop.test"], MAIL_S, "the control message"
    )
    assert all(m.header("X-Egress-Route") is None for m in delivered)
