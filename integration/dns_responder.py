"""A tiny authoritative DNS responder on loopback UDP, for DNSBL tests (dnspython).

``records`` maps (query name, type) to answers; an unknown name is NXDOMAIN.
It can be changed while running, so a test can list and delist an address.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsResponder:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.records: dict[tuple[str, str], list[str]] = {}  # (name, type) -> answers
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, answers: list[str] | None, rdtype: str = "A") -> None:
        with self.lock:
            key = (name.rstrip(".").lower(), rdtype)
            if answers:
                self.records[key] = list(answers)
            else:
                self.records.pop(key, None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            with self.lock:
                self.queries.append(name)
                answers = self.records.get((name, rdtype))
                exists = any(n == name for n, _ in self.records)
            if answers:
                reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, *answers))
            elif not exists:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)
