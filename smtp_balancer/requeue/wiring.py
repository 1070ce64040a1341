"""Is Postfix wired so that moved mail leaves by the route the table gives it?

A moved message has no FILTER any more: qmgr resolves it through the trivial-rewrite
service it is pointed at, and only a ``transport_maps`` with our table there sends
it to its new endpoint. Skip the one ``postconf -P qmgr/unix/rewrite_service_name=
rewrite`` step, and qmgr resolves through rewrite-nomap, without the table: every
moved message then leaves by the default transport, from the host's own address,
with no warning anywhere. So the requeue daemon checks before it moves anything.
Pure: postconf's answers in, problems out.
"""

from __future__ import annotations

from collections.abc import Mapping

from smtp_balancer.render.postfix import table_postconf


def wiring_problems(
    table: str, main: Mapping[str, str], options: Mapping[str, str], services: set[str]
) -> list[str]:
    """Why moved mail would not reach its new route; empty when it would.

    ``table``: our socketmap as main.cf names it; ``main``: main.cf's
    rewrite_service_name and transport_maps; ``options``: master.cf's ``-o`` as
    ``service/type/name``; ``services``: master.cf's ``service/type`` entries."""
    service = options.get("qmgr/unix/rewrite_service_name") or main.get("rewrite_service_name", "rewrite")
    if f"{service}/unix" not in services:
        return [f"qmgr resolves through the {service!r} service, which master.cf does not define"]
    maps = options.get(f"{service}/unix/transport_maps", main.get("transport_maps", ""))
    if table in maps:
        return []
    if service != "rewrite" and "rewrite/unix" in services:
        hint = f"run `{table_postconf()}` and `postfix reload`"
    else:
        hint = "apply the rendered main.cf (transport_maps) and `postfix reload`"
    return [
        f"qmgr resolves through the {service!r} service, whose transport_maps ({maps or 'empty'})"
        f" does not ask the table ({table}): moved mail would leave by the default transport,"
        f" from this host's own address; {hint}"
    ]
