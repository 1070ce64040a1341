"""Is Postfix wired so that moved mail reaches its new route? (postconf's answers, no Postfix)"""

from __future__ import annotations

from smtp_balancer.requeue.wiring import wiring_problems

TABLE = "socketmap:inet:127.0.0.1:10041:route"
SERVICES = {"rewrite/unix", "rewrite-nomap/unix", "qmgr/unix", "smtp/unix"}
MAIN = {"rewrite_service_name": "rewrite-nomap", "transport_maps": f"{TABLE}, hash:/etc/postfix/transport"}
NOMAP = {"rewrite-nomap/unix/transport_maps": "hash:/etc/postfix/transport"}


def test_the_rendered_wiring_passes():
    options = {**NOMAP, "qmgr/unix/rewrite_service_name": "rewrite"}
    assert wiring_problems(TABLE, MAIN, options, SERVICES) == []


def test_the_skipped_qmgr_step_is_named_with_its_fix():
    [problem] = wiring_problems(TABLE, MAIN, NOMAP, SERVICES)
    assert "qmgr resolves through the 'rewrite-nomap' service" in problem
    assert "from this host's own address" in problem
    assert "run `postconf -P qmgr/unix/rewrite_service_name=rewrite` and `postfix reload`" in problem


def test_a_main_cf_without_the_table():
    main = {"rewrite_service_name": "rewrite", "transport_maps": "hash:/etc/postfix/transport"}
    [problem] = wiring_problems(TABLE, main, {}, SERVICES)
    assert "does not ask the table" in problem and "apply the rendered main.cf" in problem
    # without rewrite-nomap, the table in main.cf serves qmgr (and smtpd) through `rewrite`
    assert wiring_problems(TABLE, {**main, "transport_maps": TABLE}, {}, SERVICES) == []


def test_a_rewrite_service_master_cf_lacks():
    [problem] = wiring_problems(TABLE, MAIN, NOMAP, SERVICES - {"rewrite-nomap/unix"})
    assert "which master.cf does not define" in problem
